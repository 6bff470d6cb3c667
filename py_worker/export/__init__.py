"""Export jobs: stream a dataset into Parquet files (local directory or S3) with a manifest.

Entry points: `engine.run_export` (in-process), `service.export_events` (the
gRPC Export RPC, run in a subprocess) and `cli.add_export_command`
(`hf-bridge export`).
"""
