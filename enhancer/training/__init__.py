"""Training: data packing, teacher diffusion training, distillation, safetensors checkpoints."""
