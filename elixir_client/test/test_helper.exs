# Tests that need a library absent from this machine (Explorer, Broadway,
# ExAws) tag themselves and are excluded here; a line says why.
ExUnit.start(capture_log: true)
