"""Which channels carry position: streaming moments, flip / shift / dimest rankings, the ranking file."""
