defmodule HFBridge.Faults.AuthTLSTest do
  # The Elixir client against a real server that requires TLS, a client
  # certificate and a bearer token; certificates come from a throwaway CA
  # made with the openssl command line tool.
  use ExUnit.Case, async: false

  alias HFBridge.{Client, Error, LocalServer}
  alias HFBridge.ServerCase

  @moduletag timeout: 180_000
  @token "elixir-side-token"

  setup_all do
    if System.find_executable("openssl") == nil do
      raise "openssl is required for the TLS tests"
    end

    dir = Path.join(System.tmp_dir!(), "hf_bridge_authtls_#{System.unique_integer([:positive])}")
    data = Path.join(dir, "data")
    File.mkdir_p!(data)
    make_pki!(dir)
    File.write!(Path.join(dir, "token"), @token <> "\n")
    path = ServerCase.simple_parquet!(Path.join(data, "t.parquet"), 250)

    {:ok, server, address} =
      LocalServer.start(
        python: ServerCase.python(),
        workers: 1,
        data_roots: [data],
        state_dir: Path.join(dir, "state"),
        export_root: dir,
        extra_args: [
          "--tls-cert",
          Path.join(dir, "server.pem"),
          "--tls-key",
          Path.join(dir, "server.key"),
          "--tls-client-ca",
          Path.join(dir, "ca.pem"),
          "--auth-token-file",
          Path.join(dir, "token")
        ],
        env: [{"HF_HUB_OFFLINE", "1"}]
      )

    on_exit(fn ->
      LocalServer.stop(server)
      File.rm_rf!(dir)
    end)

    [_, port] = String.split(address, ":")
    %{dir: dir, port: String.to_integer(port), path: path}
  end

  defp make_pki!(dir) do
    for ca <- ["ca", "rogue"] do
      openssl!(
        dir,
        ~w(req -x509 -newkey rsa:2048 -nodes -keyout #{ca}.key -out #{ca}.pem -days 2 -subj /CN=#{ca}-ca)
      )
    end

    issue!(dir, "ca", "server", "localhost", "serverAuth")
    issue!(dir, "ca", "client", "client", "clientAuth")
    issue!(dir, "rogue", "intruder", "intruder", "clientAuth")
  end

  defp issue!(dir, ca, name, cn, usage) do
    openssl!(
      dir,
      ~w(req -newkey rsa:2048 -nodes -keyout #{name}.key -out #{name}.csr -subj /CN=#{cn})
    )

    File.write!(Path.join(dir, "#{name}.ext"), """
    subjectAltName=DNS:localhost,IP:127.0.0.1
    basicConstraints=CA:FALSE
    extendedKeyUsage=#{usage}
    """)

    openssl!(
      dir,
      ~w(x509 -req -in #{name}.csr -CA #{ca}.pem -CAkey #{ca}.key -CAcreateserial -out #{name}.pem -days 2 -extfile #{name}.ext)
    )
  end

  defp openssl!(dir, args) do
    {out, status} = System.cmd("openssl", args, cd: dir, stderr_to_stdout: true)
    if status != 0, do: raise("openssl #{Enum.join(args, " ")} failed:\n#{out}")
  end

  defp tls(dir, client \\ "client", ca \\ "ca") do
    base = [cacertfile: Path.join(dir, "#{ca}.pem")]

    if client,
      do:
        base ++
          [certfile: Path.join(dir, "#{client}.pem"), keyfile: Path.join(dir, "#{client}.key")],
      else: base
  end

  # Connects and makes one call; the first error of either step.
  defp try_info(ctx, opts) do
    opts = Keyword.merge([address: "localhost:#{ctx.port}", local: false, timeout: 20_000], opts)

    case Client.connect(opts) do
      {:ok, client} ->
        result = HFBridge.info(client, "parquet", data_files: ctx.path)
        Client.disconnect(client)
        result

      {:error, error} ->
        {:error, error}
    end
  end

  test "TLS with a client certificate and the right token reads rows", ctx do
    {:ok, client} =
      Client.connect(
        address: "localhost:#{ctx.port}",
        local: false,
        tls: tls(ctx.dir),
        token: @token
      )

    rows = HFBridge.rows("parquet", client: client, data_files: ctx.path) |> Enum.to_list()
    assert Enum.map(rows, & &1["id"]) == Enum.to_list(0..249)
    # the token never shows when a client is inspected
    refute inspect(client) =~ @token
    Client.disconnect(client)
  end

  test "an IP address with an explicit server name verifies too", ctx do
    assert {:ok, _info} =
             try_info(ctx,
               address: "127.0.0.1:#{ctx.port}",
               tls: tls(ctx.dir) ++ [server_name_indication: ~c"localhost"],
               token: @token
             )
  end

  test "wrong and missing tokens are UNAUTHENTICATED", ctx do
    assert {:error, %Error{code: :unauthenticated} = e} =
             try_info(ctx, tls: tls(ctx.dir), token: "nope")

    assert e.message =~ "bearer token"
    assert {:error, %Error{code: :unauthenticated}} = try_info(ctx, tls: tls(ctx.dir))
    refute e.retryable
  end

  test "client certificates are required and verified", ctx do
    assert {:error, %Error{} = e} = try_info(ctx, tls: tls(ctx.dir, nil), token: @token)
    assert e.message =~ "client certificate"
    assert {:error, %Error{}} = try_info(ctx, tls: tls(ctx.dir, "intruder"), token: @token)
  end

  test "the server certificate is verified against the given CA", ctx do
    assert {:error, %Error{} = e} =
             try_info(ctx, tls: tls(ctx.dir, "client", "rogue"), token: @token)

    assert Exception.message(e) =~ ~r/cannot connect|certificate|unknown_ca|bad_cert/i
  end

  test "a plaintext client against the TLS server fails clearly", ctx do
    assert {:error, %Error{} = e} = try_info(ctx, token: @token)
    assert e.code == :unavailable
    assert e.message =~ "if the server uses TLS"
  end
end
