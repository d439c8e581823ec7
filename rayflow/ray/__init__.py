"""Ray edges: TorchTrainer drivers, Ray Data pipelines, Tune searches around the plain-torch core."""
