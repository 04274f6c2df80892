defmodule DynamicSrv.Test.Certs do
  @moduledoc false
  # Test PKI made with Debian's `openssl` at test time: certificate authorities, node
  # certificates they sign, and the `-ssl_dist_optfile` a TLS-distribution node boots with.
  # EC P-256 keys: generating them takes milliseconds, RSA keys would take seconds.

  defstruct [:cert, :key, :ca]

  @doc "A self-signed CA in `dir`, named `name` (its files are `<name>.pem` / `<name>.key`)."
  def ca!(dir, name) do
    File.mkdir_p!(dir)
    key = Path.join(dir, "#{name}.key")
    cert = Path.join(dir, "#{name}.pem")

    ext =
      write_ext!(dir, name, [
        "basicConstraints=critical,CA:TRUE",
        "keyUsage=critical,keyCertSign,cRLSign"
      ])

    openssl!(~w(ecparam -name prime256v1 -genkey -noout -out) ++ [key])

    openssl!(
      ~w(req -x509 -new -sha256 -days 2 -key) ++
        [key, "-subj", "/CN=#{name}", "-out", cert, "-extensions", "ext", "-config", ext]
    )

    %__MODULE__{cert: cert, key: key}
  end

  @doc """
  A certificate for `name` signed by `ca`, valid for TLS client and server use, with the DNS
  names `dns_names` as subjectAltName (what the connecting side checks the server against).
  """
  def issue!(%__MODULE__{} = ca, dir, name, dns_names) do
    key = Path.join(dir, "#{name}.key")
    csr = Path.join(dir, "#{name}.csr")
    cert = Path.join(dir, "#{name}.pem")
    san = Enum.map_join(dns_names, ",", &"DNS:#{&1}")

    ext =
      write_ext!(dir, name, [
        "basicConstraints=critical,CA:FALSE",
        "keyUsage=critical,digitalSignature",
        "extendedKeyUsage=serverAuth,clientAuth",
        "subjectAltName=#{san}"
      ])

    openssl!(~w(ecparam -name prime256v1 -genkey -noout -out) ++ [key])

    openssl!(
      ~w(req -new -sha256 -config) ++ [ext, "-key", key, "-subj", "/CN=#{name}", "-out", csr]
    )

    openssl!(
      ~w(x509 -req -sha256 -days 2 -set_serial) ++
        [Integer.to_string(System.unique_integer([:positive]))] ++
        ["-in", csr, "-CA", ca.cert, "-CAkey", ca.key, "-out", cert] ++
        ["-extfile", ext, "-extensions", "ext"]
    )

    %__MODULE__{cert: cert, key: key, ca: ca}
  end

  @doc """
  Writes the `-ssl_dist_optfile` for a node holding `identity` (issued by its CA, which is
  also the only CA it trusts): mutual verification, TLS 1.3 only. Returns the file's path.
  """
  def dist_optfile!(%__MODULE__{ca: %__MODULE__{} = ca} = identity, path) do
    common = [
      cacertfile: to_charlist(ca.cert),
      certfile: to_charlist(identity.cert),
      keyfile: to_charlist(identity.key),
      verify: :verify_peer,
      versions: [:"tlsv1.3"]
    ]

    terms = [server: common ++ [fail_if_no_peer_cert: true], client: common]
    File.write!(path, :io_lib.format(~c"~p.~n", [terms]))
    path
  end

  @doc """
  The options `:ssl.connect/3` needs to present `identity` to a node, trusting `trusted`
  (default: the CA that issued `identity`).
  """
  def client_options(%__MODULE__{} = identity, trusted \\ nil) do
    trusted = trusted || identity.ca

    [
      cacertfile: to_charlist(trusted.cert),
      certfile: to_charlist(identity.cert),
      keyfile: to_charlist(identity.key),
      verify: :verify_peer,
      versions: [:"tlsv1.3"]
    ]
  end

  defp write_ext!(dir, name, lines) do
    path = Path.join(dir, "#{name}.cnf")

    File.write!(path, """
    [req]
    distinguished_name = dn
    [dn]
    [ext]
    #{Enum.join(lines, "\n")}
    """)

    path
  end

  defp openssl!(args) do
    openssl =
      System.find_executable("openssl") || raise "openssl not found: apt-get install openssl"

    case System.cmd(openssl, args, stderr_to_stdout: true) do
      {_, 0} -> :ok
      {output, status} -> raise "openssl #{Enum.join(args, " ")} exited #{status}:\n#{output}"
    end
  end
end
