"""The deployable student: `<output_dir>/student/` (weights, a torch.export program plain torch loads,
the input contract in student.json, MODEL_CARD.md), how to load it, and batch prediction with it."""
