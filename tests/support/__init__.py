"""Test-only helpers (tests and the measurement scripts in measurements/ import them; the product never
does): kubeconform for the manifests, an OTLP receiver, a fake LiveKit worker protocol, fault-injecting
stage requests and spoken pauses."""
