"""Experiments: studies swept on Optuna (``sweep``), the runs store (``store``), statistics over seeds
(``stats``) and reports (``report``). This layer only writes study folders and reads run folders; each
trial trains as a ``squeezelab train`` subprocess, so the engine knows nothing about studies."""
