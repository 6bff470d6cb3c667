defmodule HFBridge.Test.InteropMessages do
  @moduledoc false
  # Encoders/decoders for the few grpc.testing messages the interop tests
  # use (tests/interop/proto/test_service.proto), written against the
  # protobuf wire format directly.

  import Bitwise

  @doc "SimpleRequest: response_size (2), payload (3), response_status (7)."
  def simple_request(opts \\ []) do
    [
      int_field(2, Keyword.get(opts, :response_size, 0)),
      bytes_field(3, payload(Keyword.get(opts, :payload_size, 0))),
      status_field(Keyword.get(opts, :status))
    ]
    |> IO.iodata_to_binary()
  end

  @doc "StreamingOutputCallRequest: response_parameters (2), response_status (7)."
  def streaming_request(params, opts \\ []) do
    fields =
      Enum.map(params, fn p ->
        {size, interval} =
          case p do
            {size, interval} -> {size, interval}
            size -> {size, 0}
          end

        bytes_field(2, [int_field(1, size), int_field(2, interval)])
      end)

    IO.iodata_to_binary([fields, status_field(Keyword.get(opts, :status))])
  end

  @doc "Returns the payload body of a SimpleResponse / StreamingOutputCallResponse."
  def payload_body(message) do
    with {:ok, payload} <- field(message, 1),
         {:ok, body} <- field(payload, 2) do
      body
    else
      :error -> ""
    end
  end

  defp payload(0), do: nil
  defp payload(size), do: bytes_field(2, :binary.copy(<<0>>, size))

  defp status_field(nil), do: []

  defp status_field({code, message}),
    do: bytes_field(7, [int_field(1, code), bytes_field(2, message)])

  defp int_field(_n, 0), do: []
  defp int_field(n, value), do: [varint(n <<< 3), varint(value)]

  defp bytes_field(_n, nil), do: []

  defp bytes_field(n, data) do
    data = IO.iodata_to_binary(data)
    [varint(n <<< 3 ||| 2), varint(byte_size(data)), data]
  end

  defp varint(v) when v < 128, do: <<v>>
  defp varint(v), do: <<1::1, band(v, 127)::7, varint(v >>> 7)::binary>>

  # First length-delimited field `n` of a message.
  defp field(<<>>, _n), do: :error

  defp field(bin, n) do
    {key, rest} = read_varint(bin)

    case {key >>> 3, band(key, 7)} do
      {^n, 2} ->
        {len, rest} = read_varint(rest)
        {:ok, binary_part(rest, 0, len)}

      {_, 2} ->
        {len, rest} = read_varint(rest)
        field(binary_part(rest, len, byte_size(rest) - len), n)

      {_, 0} ->
        {_, rest} = read_varint(rest)
        field(rest, n)
    end
  end

  defp read_varint(<<1::1, low::7, rest::binary>>) do
    {high, rest} = read_varint(rest)
    {low ||| high <<< 7, rest}
  end

  defp read_varint(<<0::1, v::7, rest::binary>>), do: {v, rest}
end
