defmodule HFBridge.CLI.Progress do
  @moduledoc """
  A progress line on stderr for long-running `mix hf.*` tasks.

  Nothing is printed during the first second. After that the line
  (`12000 rows, 8400 rows/s, 3.1 MB`) is redrawn in place with `\\r` at most
  ten times a second when stderr is a terminal, and printed as a new line
  every five seconds otherwise (logs, CI). `finish/1` clears a redrawn line.
  """

  alias HFBridge.CLI.Format

  defstruct started: 0, last: 0, rows: 0, bytes: 0, tty?: false, drawn?: false, enabled?: true

  @typedoc "Progress state: counters and when the line was last drawn (monotonic ms)."
  @type t :: %__MODULE__{
          started: integer(),
          last: integer(),
          rows: non_neg_integer(),
          bytes: non_neg_integer(),
          tty?: boolean(),
          drawn?: boolean(),
          enabled?: boolean()
        }

  @doc "Starts counting. `enabled?: false` keeps counting but never prints."
  @spec new(keyword()) :: t()
  def new(opts \\ []) do
    now = now()

    %__MODULE__{
      started: now,
      last: now,
      tty?: Keyword.get_lazy(opts, :tty?, &stderr_tty?/0),
      enabled?: Keyword.get(opts, :enabled?, true)
    }
  end

  @doc "Adds rows and bytes; redraws the line when due."
  @spec advance(t(), non_neg_integer(), non_neg_integer()) :: t()
  def advance(%__MODULE__{} = p, rows, bytes) do
    p = %{p | rows: p.rows + rows, bytes: p.bytes + bytes}
    now = now()
    interval = if p.tty?, do: 100, else: 5_000

    if p.enabled? and now - p.started >= 1_000 and now - p.last >= interval do
      draw(%{p | last: now}, now)
    else
      p
    end
  end

  @doc "Restarts the clock at `monotonic_ms` (`System.monotonic_time(:millisecond)`), keeping the counters."
  @spec restart(t(), integer()) :: t()
  def restart(%__MODULE__{} = p, monotonic_ms),
    do: %{p | started: monotonic_ms, last: monotonic_ms}

  @doc "Seconds since `new/1` (or `restart/2`)."
  @spec elapsed(t()) :: float()
  def elapsed(%__MODULE__{started: started}), do: (now() - started) / 1000

  @doc "Clears a redrawn line so that the next output starts on a clean line."
  @spec finish(t()) :: t()
  def finish(%__MODULE__{drawn?: true, tty?: true} = p) do
    IO.write(:stderr, "\r\e[2K")
    %{p | drawn?: false}
  end

  def finish(p), do: p

  defp draw(p, now) do
    seconds = max((now - p.started) / 1000, 0.001)
    text = "#{p.rows} rows, #{round(p.rows / seconds)} rows/s, #{Format.bytes(p.bytes)}"

    if p.tty? do
      IO.write(:stderr, "\r\e[2K" <> text)
    else
      IO.write(:stderr, text <> "\n")
    end

    %{p | drawn?: true}
  end

  defp stderr_tty? do
    match?({:ok, _}, :io.columns(:standard_error))
  end

  defp now, do: System.monotonic_time(:millisecond)
end
