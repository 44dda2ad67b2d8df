"""Model families built on the one core (paths, parameterisations, objectives), one module per piece: the
``--process`` presets (presets.py), consistency distillation and tuning (distill.py), rectified flow's reflow
(reflow.py) and the straightness of a flow (straightness.py)."""
