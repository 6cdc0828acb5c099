"""The built-in sidecars of sidecar-run, loaded through the same entry points as any plugin."""
