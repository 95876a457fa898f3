"""What a call shows of itself while it runs: ids on every log line (logcontext), OpenTelemetry export
(telemetry) and one trace per user turn (turn_traces). Turn lines and Prometheus are the metrics plugin's
(handler_plugins/metrics.py), fed by the pipeline's turn tracker."""
