"""Identity encoder and identity-conditioned diffusion generator."""
