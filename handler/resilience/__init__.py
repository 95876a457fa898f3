"""No silent failures: every streaming stage is bounded, watched, counted and, when a provider stays
down, decided on.

- `ledger`: per-session fault counts per stage (retries, timeouts, fallbacks, errors, lost turns),
  the API the turn lines and the turn tracker read;
- `breaker`: per-process provider health: after a request spent its attempts the provider is
  probed again only with backoff and a cap, however many calls want it;
- `stt_guard`: the STT stream wrapper: attempts bounded per request (handshakes included), a
  watchdog on a stream that owes a transcript, the utterance in flight replayed on a new stream;
- `decider`: a stage without a fallback that keeps failing ends the session with one ERROR line
  and the configured apology, instead of a silent or endless call.
"""
