"""Jobs on the tools: argument dataclasses and presets, the trainer and the evaluator, which `train_scripts/`
call."""
