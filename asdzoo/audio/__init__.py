"""Audio I/O, features and two-channel front-ends, in pure torch (no torchaudio, DESIGN §7)."""
