"""The song: audio, lyrics and the plan of what guides which stretch. No torch, no weights."""
