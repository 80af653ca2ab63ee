"""What changing the position channels does: AugShift, channel ablation, region attacks."""
