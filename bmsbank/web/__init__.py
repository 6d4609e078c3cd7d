"""``bmsbank web``: the read-only bank view page, its live feed and its history store."""
