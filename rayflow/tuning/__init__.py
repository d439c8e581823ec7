"""Choosing rho and M: the error bound over a pool (`scores.py`, `rayflow bound`) and the Tune search
(`search.py`, `rayflow tune`). Above the stage graph: trials are graph nodes with overrides."""
