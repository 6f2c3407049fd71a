"""Neural building blocks shared by systems: pooling, heads, losses."""
