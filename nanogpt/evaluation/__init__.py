"""Benchmarks of lm-evaluation-harness on a trained GPT: harness (tasks, scores, result files, training's
eval_tasks) and lm (our GPT as an lm_eval model). Both import lm_eval, an optional dependency,
only when asked for benchmarks."""
