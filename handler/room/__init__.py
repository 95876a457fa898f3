"""The real LiveKit room: a caller (`call`) that talks to a dispatched agent as a participant."""
