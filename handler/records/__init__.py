"""The call record (`record`), its queue and durable spool (`writer`, `spool`), the observer that
builds it (`observer`), the stores' shared reading (`store`) and `python -m handler calls`
(`commands`). Sinks are `records` providers: `handler_plugins/records_*.py` (docs/records.md)."""
