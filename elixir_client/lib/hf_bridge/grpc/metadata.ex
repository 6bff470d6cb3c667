defmodule HFBridge.GRPC.Metadata do
  @moduledoc """
  gRPC metadata and header values (gRPC over HTTP/2 protocol description):
  custom metadata validation and `-bin` base64 handling, `grpc-timeout`
  encoding, `grpc-message` percent-decoding, and the mapping of HTTP status
  codes and RST_STREAM error codes to gRPC statuses.
  """

  alias HFBridge.Error

  @reserved ~w(content-type te host connection user-agent upgrade transfer-encoding keep-alive)

  @typedoc "Metadata as given by callers: names and values as strings."
  @type metadata :: [{String.t() | atom(), String.t()}]

  @doc """
  Validates and encodes request metadata into header fields. Names are
  lowercased; values of `-bin` names are base64-encoded; other values must be
  printable ASCII. Reserved names (`:…`, `grpc-…`, transport headers) are
  rejected.
  """
  @spec encode(metadata()) :: {:ok, [{binary(), binary()}]} | {:error, Error.t()}
  def encode(metadata) when is_list(metadata) do
    Enum.reduce_while(metadata, {:ok, []}, fn
      {name, value}, {:ok, acc} when (is_binary(name) or is_atom(name)) and is_binary(value) ->
        name = name |> to_string() |> String.downcase()

        case encode_one(name, value) do
          {:ok, field} -> {:cont, {:ok, [field | acc]}}
          {:error, _} = error -> {:halt, error}
        end

      other, _ ->
        {:halt,
         {:error,
          invalid("metadata entries must be {name, binary value}, got: #{inspect(other)}")}}
    end)
    |> case do
      {:ok, fields} -> {:ok, Enum.reverse(fields)}
      error -> error
    end
  end

  def encode(other), do: {:error, invalid("metadata must be a list, got: #{inspect(other)}")}

  defp encode_one(name, value) do
    cond do
      name == "" or not Regex.match?(~r/^[0-9a-z_.\-]+$/, name) ->
        {:error, invalid("invalid metadata name #{inspect(name)}")}

      String.starts_with?(name, "grpc-") or name in @reserved ->
        {:error, invalid("metadata name #{inspect(name)} is reserved")}

      String.ends_with?(name, "-bin") ->
        {:ok, {name, Base.encode64(value, padding: false)}}

      not Regex.match?(~r/^[\x20-\x7E]*$/, value) ->
        {:error,
         invalid("metadata #{inspect(name)} must be printable ASCII; use a -bin name for bytes")}

      true ->
        {:ok, {name, value}}
    end
  end

  defp invalid(message), do: Error.new(:grpc, :invalid_argument, message)

  @doc """
  Decodes response headers or trailers for the caller: `-bin` values are
  base64-decoded (padded or not); pseudo-headers are dropped.
  """
  @spec decode([{binary(), binary()}]) :: [{binary(), binary()}]
  def decode(headers) do
    for {name, value} <- headers, not String.starts_with?(name, ":") do
      if String.ends_with?(name, "-bin") do
        {name, decode_bin(value)}
      else
        {name, value}
      end
    end
  end

  defp decode_bin(value) do
    # Several values may be joined with commas (HTTP field folding).
    value
    |> String.split(",")
    |> Enum.map(fn part ->
      part = part |> String.trim() |> String.trim_trailing("=")

      case Base.decode64(part, padding: false) do
        {:ok, bin} -> bin
        :error -> part
      end
    end)
    |> Enum.join()
  end

  @doc """
  Encodes a timeout in milliseconds as a `grpc-timeout` value: at most eight
  digits and a unit.
  """
  @spec encode_timeout(non_neg_integer()) :: String.t()
  def encode_timeout(ms) when ms < 100_000_000, do: "#{ms}m"
  def encode_timeout(ms) when ms < 100_000_000_000, do: "#{div(ms, 1000)}S"
  def encode_timeout(ms) when ms < 6_000_000_000_000, do: "#{div(ms, 60_000)}M"
  def encode_timeout(ms), do: "#{min(div(ms, 3_600_000), 99_999_999)}H"

  @doc "Percent-decodes a `grpc-message` value; malformed escapes stay as they are."
  @spec percent_decode(binary()) :: binary()
  def percent_decode(value), do: pd(value, [])

  defp pd(<<?%, a, b, rest::binary>>, acc) do
    case Integer.parse(<<a, b>>, 16) do
      {byte, ""} -> pd(rest, [acc, byte])
      _ -> pd(<<a, b, rest::binary>>, [acc, ?%])
    end
  end

  defp pd(<<c, rest::binary>>, acc), do: pd(rest, [acc, c])
  defp pd(<<>>, acc), do: IO.iodata_to_binary(acc)

  @doc """
  The gRPC status implied by a non-200 HTTP status when no `grpc-status`
  was sent ("HTTP to gRPC Status Code Mapping").
  """
  @spec http_status_to_grpc(integer()) :: non_neg_integer()
  def http_status_to_grpc(400), do: 13
  def http_status_to_grpc(401), do: 16
  def http_status_to_grpc(403), do: 7
  def http_status_to_grpc(404), do: 12
  def http_status_to_grpc(status) when status in [429, 502, 503, 504], do: 14
  def http_status_to_grpc(_), do: 2

  @doc "The gRPC status for a stream reset by the server with an HTTP/2 error code."
  @spec rst_to_grpc(atom() | non_neg_integer()) :: non_neg_integer()
  def rst_to_grpc(:refused_stream), do: 14
  def rst_to_grpc(:cancel), do: 1
  def rst_to_grpc(:enhance_your_calm), do: 8
  def rst_to_grpc(:inadequate_security), do: 7
  def rst_to_grpc(_), do: 13
end
