"""Fleet coordinator."""
