defmodule HFBridge.GRPC.TLSTest do
  # TLS with ALPN h2 against the Python interop server, using a throwaway
  # CA and server certificate made with the openssl command line tool.
  use ExUnit.Case, async: false

  alias HFBridge.GRPC
  alias HFBridge.Test.InteropServer

  @moduletag timeout: 120_000

  setup_all do
    if System.find_executable("openssl") == nil do
      IO.puts("skipping TLS tests: openssl is not installed")
      %{server: nil}
    else
      dir = Path.join(System.tmp_dir!(), "hf_bridge_tls_#{System.unique_integer([:positive])}")
      File.mkdir_p!(dir)
      make_certs!(dir)

      {:ok, server} =
        InteropServer.start(:python,
          INTEROP_TLS_CERT: Path.join(dir, "server.pem"),
          INTEROP_TLS_KEY: Path.join(dir, "server.key")
        )

      on_exit(fn ->
        InteropServer.stop(server)
        File.rm_rf!(dir)
      end)

      %{server: server, dir: dir}
    end
  end

  defp make_certs!(dir) do
    run!(
      dir,
      ~w(req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.pem -days 2 -subj /CN=hf_bridge-test-ca)
    )

    run!(
      dir,
      ~w(req -newkey rsa:2048 -nodes -keyout server.key -out server.csr -subj /CN=localhost)
    )

    File.write!(Path.join(dir, "ext.cnf"), """
    subjectAltName=DNS:localhost,IP:127.0.0.1
    basicConstraints=CA:FALSE
    keyUsage=digitalSignature,keyEncipherment
    extendedKeyUsage=serverAuth
    """)

    run!(
      dir,
      ~w(x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -out server.pem -days 2 -extfile ext.cnf)
    )
  end

  defp run!(dir, args) do
    {out, 0} = System.cmd("openssl", args, cd: dir, stderr_to_stdout: true)
    out
  end

  test "unary and streaming calls over TLS with a verified certificate", %{
    server: server,
    dir: dir
  } do
    if server do
      tls = [cacertfile: Path.join(dir, "ca.pem")]
      {:ok, conn} = GRPC.connect("localhost", server.port, tls: tls)
      assert {:ok, ""} = GRPC.unary(conn, "/grpc.testing.TestService/EmptyCall", "")

      req = HFBridge.Test.InteropMessages.streaming_request([100, 200_000])

      {:ok, stream} =
        GRPC.server_stream(conn, "/grpc.testing.TestService/StreamingOutputCall", req)

      assert {:ok, _} = GRPC.recv(stream, 10_000)
      assert {:ok, big} = GRPC.recv(stream, 10_000)
      assert byte_size(big) > 200_000
      assert :done = GRPC.recv(stream, 10_000)
      GRPC.disconnect(conn)
    end
  end

  test "an untrusted certificate is refused by default", %{server: server} do
    if server do
      assert {:error, %HFBridge.Error{code: :unavailable}} =
               GRPC.connect("localhost", server.port, tls: true, connect_timeout: 5_000)
    end
  end

  test "plain HTTP/2 to a TLS port fails cleanly", %{server: server} do
    if server do
      assert {:error, %HFBridge.Error{}} =
               GRPC.connect("127.0.0.1", server.port, connect_timeout: 3_000)
    end
  end
end
