"""Front ends of `ntkscope.Monitor` in other training loops (optional extras).

- `ntkscope.integrations.lightning.NTKMonitor`: a PyTorch Lightning ``Callback``
  (``pip install ntkscope[lightning]``).
- `ntkscope.integrations.hf.NTKMonitorCallback`: a Hugging Face ``TrainerCallback``
  (``pip install ntkscope[hf]``).

Each module imports its framework; ``import ntkscope`` imports neither. What both share
(the monitor's set-up, the names under which records are logged, the report at the end)
is in `ntkscope.integrations._common`.
"""
