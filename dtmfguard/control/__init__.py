"""Call control: the media engine of a call, the call registry and the NG command table."""
