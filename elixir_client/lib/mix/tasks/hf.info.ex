defmodule Mix.Tasks.Hf.Info do
  @shortdoc "Describes a HuggingFace dataset: features, schema, splits"

  @moduledoc """
  Prints what a dataset offers — builder, configurations, splits (with row
  counts when known), source shards, HF features and the Arrow schema —
  without reading its rows.

      mix hf.info SPEC [options]

  SPEC is a Hub id (`user/name`), a packaged builder (`parquet`, `json`,
  `csv`, `arrow`, `text`) used with `--data-files`, or a local dataset
  folder.

  ## Examples

      mix hf.info ./my_dataset
      mix hf.info parquet --data-files 'data/*.parquet'
      mix hf.info imdb --config plain_text --address 127.0.0.1:50051

  ## Output options

      --json                 print the description as one JSON object

  #{HFBridge.CLI.moduledoc_flags()}
  """

  use Mix.Task

  alias HFBridge.CLI
  alias HFBridge.CLI.Describe

  @task "hf.info"

  @impl Mix.Task
  def run(argv) do
    parsed = CLI.parse!(@task, argv, json: :boolean)

    CLI.with_client(@task, parsed.client_opts, fn client ->
      case HFBridge.info(client, parsed.dataset, parsed.dataset_opts) do
        {:ok, info} ->
          if parsed.task_opts[:json] do
            IO.puts(HFBridge.JSON.encode!(Describe.to_json(info)))
          else
            IO.write(Describe.text(info))
          end

        {:error, error} ->
          CLI.raise_error(@task, error)
      end
    end)
  end
end
