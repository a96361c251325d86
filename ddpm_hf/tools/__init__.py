"""Tools on the core: data, distribution over processes, evaluation and metrics, rate-distortion, plots, the
run folder, checkpoints, model cards and the Hub. They import the core, never the jobs."""
