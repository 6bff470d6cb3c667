Code.require_file("fixtures.exs", __DIR__)

defmodule HFBridge.ExAws.HttpClientTest do
  # The :httpc client ExAws uses, against a real S3-protocol server (moto).
  # It needs no ExAws itself, so this runs everywhere.
  use ExUnit.Case, async: true

  alias HFBridge.ExAws.HttpClient

  @moduletag timeout: 120_000

  setup_all do
    {:ok, _} = Application.ensure_all_started(:inets)
    moto = HFBridge.MotoServer.start!()
    on_exit(fn -> HFBridge.MotoServer.stop(moto) end)
    %{s3: moto.endpoint}
  end

  # moto checks who asks (anonymous reads of private objects are refused)
  # but, with its IAM checks off, not the signature itself.
  @auth {"authorization",
         "AWS4-HMAC-SHA256 Credential=testing/20260101/us-east-1/s3/aws4_request, " <>
           "SignedHeaders=host, Signature=00"}

  test "PUT, GET, HEAD, ranged GET and DELETE of an object", %{s3: s3} do
    bucket = "#{s3}/http-client-test"
    assert {:ok, %{status_code: 200}} = HttpClient.request(:put, bucket, "", [@auth], [])

    body = :crypto.strong_rand_bytes(100_000)

    assert {:ok, %{status_code: 200}} =
             HttpClient.request(:put, bucket <> "/dir/blob.bin", body, [
               {"content-type", "application/octet-stream"},
               {"content-length", "100000"},
               {"x-amz-meta-origin", "hf-bridge"},
               @auth
             ])

    assert {:ok, %{status_code: 200, body: ^body, headers: headers}} =
             HttpClient.request(:get, bucket <> "/dir/blob.bin", "", [@auth], [])

    assert is_list(headers) and Enum.all?(headers, fn {k, v} -> is_binary(k) and is_binary(v) end)
    assert header(headers, "x-amz-meta-origin") == "hf-bridge"

    assert {:ok, %{status_code: 200, headers: head_headers}} =
             HttpClient.request(:head, bucket <> "/dir/blob.bin", "", [@auth], [])

    assert header(head_headers, "content-length") == "100000"

    assert {:ok, %{status_code: 206, body: part}} =
             HttpClient.request(
               :get,
               bucket <> "/dir/blob.bin",
               "",
               [{"range", "bytes=10-19"}, @auth],
               timeout: 5_000
             )

    assert part == binary_part(body, 10, 10)

    assert {:ok, %{status_code: 204}} =
             HttpClient.request(:delete, bucket <> "/dir/blob.bin", "", [@auth], [])

    assert {:ok, %{status_code: 404, body: xml}} =
             HttpClient.request(:get, bucket <> "/dir/blob.bin", "", [@auth], [])

    assert xml =~ "NoSuchKey"
  end

  test "no server: an error with a reason, not a raise" do
    {:ok, socket} = :gen_tcp.listen(0, ip: {127, 0, 0, 1})
    {:ok, port} = :inet.port(socket)
    :gen_tcp.close(socket)

    assert {:error, %{reason: _}} =
             HttpClient.request(:get, "http://127.0.0.1:#{port}/x", "", [], connect_timeout: 1_000)
  end

  defp header(headers, name) do
    Enum.find_value(headers, fn {k, v} -> if String.downcase(k) == name, do: v end)
  end
end
