"""How much position the features of a network carry: linear probes and position-map readouts."""
