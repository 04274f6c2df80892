defmodule DynamicSrv.Integration.TlsTest do
  # TLS distribution (`-proto_dist inet_tls`) with mutual certificate verification, found
  # through SRV records by DynamicSrv.Epmd, no epmd. Certificates are made at test time with
  # openssl (DynamicSrv.Test.Certs): one CA for the cluster, and a second CA whose node must
  # be refused although it has the right cookie.
  #
  # Hostname checking stays on. The connecting side sends the host part of the node name as
  # SNI (`svc.dyn.test` for `n1@svc.dyn.test`) and checks the server's certificate against it,
  # whatever IP (127.0.0.x here) DNS gave: so every node certificate names the service as a
  # DNS subjectAltName.
  use ExUnit.Case, async: false
  @moduletag :integration

  alias DynamicSrv.Test.{Certs, Fleet, Mesh, NodeAgent, Peer}

  @service Fleet.service()

  setup do
    dir = Path.join(System.tmp_dir!(), "dynamic_srv_tls_#{System.unique_integer([:positive])}")

    on_exit(fn -> File.rm_rf(dir) end)
    good_ca = Certs.ca!(dir, "cluster-ca")
    other_ca = Certs.ca!(dir, "other-ca")
    {:ok, dir: dir, good_ca: good_ca, other_ca: other_ca}
  end

  # --- helpers ---------------------------------------------------------------------------

  # Each node on its own loopback address, so a connection's ends tell the nodes apart.
  defp specs(names) do
    names
    |> Fleet.specs()
    |> Enum.with_index(1)
    |> Enum.map(fn {spec, i} -> %{spec | ip: "127.0.0.#{i}"} end)
  end

  defp start_dns!(specs), do: Fleet.start_dns!(Fleet.records(specs))

  # `ca: nil` boots a plain TCP-distribution node; otherwise a TLS one holding a certificate
  # for the service name issued by `ca`.
  defp boot!(specs, dns, dir, ca),
    do: Fleet.boot!(specs, dns, %{}, erl_args: &tls_args(&1, dir, ca))

  defp tls_args(_spec, _dir, nil), do: []

  defp tls_args(spec, dir, ca) do
    identity = Certs.issue!(ca, dir, spec.name, [@service])
    optfile = Certs.dist_optfile!(identity, Path.join(dir, "#{spec.name}.ssl_dist.conf"))
    ["-proto_dist", "inet_tls", "-ssl_dist_optfile", optfile]
  end

  defp node_list(peer), do: Fleet.node_list(peer)

  defp timed_full_mesh(peers) do
    {micros, _} = :timer.tc(fn -> Mesh.connect_and_assert_full_mesh(peers) end)
    div(micros, 1000)
  end

  # How `peer` is connected to each other node: the protocol net_kernel records for the
  # connection, and whether its distribution controller is a port (TCP) or a process (TLS).
  # Only connections that are up: an attempt still in its handshake (the rogue dialling in)
  # has no address yet.
  defp connection_kinds(peer) do
    {:ok, infos} = Peer.call(peer, :net_kernel, :nodes_info, [])
    controllers = Map.new(Peer.call(peer, :erlang, :system_info, [:dist_ctrl]))

    for {node, info} <- infos, info[:state] == :up, into: %{} do
      {:net_address, {_ip, _port}, _host, protocol, _family} = Keyword.fetch!(info, :address)
      controller = if is_pid(controllers[node]), do: :process, else: :port
      {node, {protocol, controller}}
    end
  end

  defp tls_handshake(spec, identity, server_name, trusted \\ nil) do
    :ok = Application.ensure_started(:crypto)
    :ok = Application.ensure_started(:asn1)
    :ok = Application.ensure_started(:public_key)
    :ok = Application.ensure_started(:ssl)

    options =
      [:binary, active: true, server_name_indication: to_charlist(server_name)] ++
        Certs.client_options(identity, trusted)

    {:ok, ip} = :inet.parse_address(to_charlist(spec.ip))

    with {:ok, socket} <- :ssl.connect(ip, spec.port, options, 10_000) do
      # TLS 1.3: the server checks our certificate after our side of the handshake is done,
      # so its refusal can arrive at any moment from here on; in active mode it arrives as a
      # message, whenever that is. (The answers below are nil once it has closed.)
      protocol =
        case :ssl.connection_information(socket, [:protocol]) do
          {:ok, [protocol: protocol]} -> protocol
          {:error, _closed} -> nil
        end

      names =
        case :ssl.peercert(socket) do
          {:ok, der} -> common_name(der)
          {:error, _closed} -> nil
        end

      outcome =
        receive do
          {:ssl_error, ^socket, reason} -> {:error, reason}
          {:ssl_closed, ^socket} -> :closed
        after
          1_000 -> :open
        end

      :ssl.close(socket)
      {:ok, protocol, names, outcome}
    end
  end

  defp common_name(der) do
    {:OTPCertificate, {:OTPTBSCertificate, _, _, _, _, _, {:rdnSequence, rdns}, _, _, _, _}, _, _} =
      :public_key.pkix_decode_cert(der, :otp)

    for [{:AttributeTypeAndValue, {2, 5, 4, 3}, value}] <- rdns do
      case value do
        {:utf8String, name} -> name
        {:printableString, name} -> to_string(name)
        name -> to_string(name)
      end
    end
  end

  # Three TLS nodes with certificates from the cluster's CA, and a rogue one (same cookie,
  # listed in the same service) whose certificate comes from another CA.
  defp boot_good_and_rogue!(ctx) do
    specs = specs(["n1", "n2", "n3", "rogue"])
    {good_specs, [rogue_spec]} = Enum.split(specs, 3)
    dns = start_dns!(specs)
    good = boot!(good_specs, dns, ctx.dir, ctx.good_ca)
    [rogue] = boot!([rogue_spec], dns, ctx.dir, ctx.other_ca)
    {good_specs, good, rogue}
  end

  # The good nodes are connected to exactly each other and never saw `rogue` come up (nor
  # go down); `rogue` is connected to nobody.
  defp assert_kept_out(good, rogue) do
    for peer <- good do
      assert node_list(peer) == Enum.sort(Enum.map(good, & &1.name) -- [peer.name])
      events = Peer.call(peer, NodeAgent, :node_events, [])
      refute Enum.any?(events, fn {_kind, node} -> node == rogue.name end), inspect(events)
    end

    assert node_list(rogue) == []
  end

  # --- scenarios -------------------------------------------------------------------------

  test "TLS nodes with one CA form a full mesh through SRV, without epmd; another CA's node is refused both ways",
       ctx do
    {good_specs, good, rogue} = boot_good_and_rogue!(ctx)

    for peer <- good, do: :ok = Peer.call(peer, NodeAgent, :start_recorder, [])

    mesh_ms = timed_full_mesh(good)
    IO.puts("\n[tls] 3 TLS nodes: full mesh by Node.connect in #{mesh_ms} ms")

    for peer <- good ++ [rogue] do
      Mesh.assert_no_epmd(peer)
      assert Peer.call(peer, :init, :get_argument, [:proto_dist]) == {:ok, [[~c"inet_tls"]]}
    end

    # Every connection is a TLS one: net_kernel records protocol tls, and the distribution
    # controller is the TLS connection's process (a TCP connection's is a port).
    for peer <- good do
      kinds = connection_kinds(peer)
      assert map_size(kinds) == 2

      for {node, kind} <- kinds,
          do: assert(kind == {:tls, :process}, "#{peer.name} -> #{node}: #{inspect(kind)}")
    end

    # The same cookie, a certificate from another CA: refused dialling in and dialled.
    for peer <- good do
      refute Peer.call(rogue, Node, :connect, [peer.name])
      refute Peer.call(peer, Node, :connect, [rogue.name])
    end

    assert_kept_out(good, rogue)

    # From outside: n1's distribution port speaks TLS 1.3 and presents n1's certificate to a
    # client holding a cluster certificate...
    [n1_spec | _] = good_specs
    member = Certs.issue!(ctx.good_ca, ctx.dir, "probe", ["probe.dyn.test"])
    assert {:ok, :"tlsv1.3", ["n1"], :open} = tls_handshake(n1_spec, member, @service)

    # ...checks the service name against that certificate (hostname checking is on)...
    # (OTP 25 sends the alert as handshake_failure, newer ssl as bad_certificate.)
    assert {:error, {:tls_alert, {alert, text}}} =
             tls_handshake(n1_spec, member, "elsewhere.dyn.test")

    assert alert in [:handshake_failure, :bad_certificate]
    assert to_string(text) =~ "hostname_check_failed"

    # ...and refuses a client whose certificate comes from another CA, even one that trusts
    # the cluster's CA.
    outsider = Certs.issue!(ctx.other_ca, ctx.dir, "outsider", [@service])

    assert {:ok, _protocol, _names, {:error, {:tls_alert, {:unknown_ca, _}}}} =
             tls_handshake(n1_spec, outsider, @service, ctx.good_ca)
  end

  test "the strategy forms the TLS mesh from the service's SRV records and never admits another CA's node",
       ctx do
    {_good_specs, good, rogue} = boot_good_and_rogue!(ctx)
    all = good ++ [rogue]

    for peer <- all, do: assert(node_list(peer) == [])

    {micros, _} =
      :timer.tc(fn ->
        Fleet.start_clusters!(all, [])
        Fleet.assert_full_mesh(good)
      end)

    IO.puts(
      "\n[tls] strategy: 3 TLS nodes (+1 refused) in full mesh #{div(micros, 1000)} ms after start"
    )

    # Every node, the rogue included, polled and listed all four members; the rogue dialled
    # the others on every poll and they dialled it: still nobody let it in.
    for peer <- all do
      assert Mesh.eventually(fn ->
               length(Peer.call(peer, NodeAgent, :cluster_members, [])) == 4
             end)
    end

    for peer <- good, do: Peer.call(peer, NodeAgent, :cluster_poll_now, [])
    Peer.call(rogue, NodeAgent, :cluster_poll_now, [])

    assert_kept_out(good, rogue)

    for peer <- good do
      kinds = connection_kinds(peer)
      assert Enum.sort(Map.keys(kinds)) == Enum.sort(Enum.map(good, & &1.name) -- [peer.name])
      for {_node, kind} <- kinds, do: assert(kind == {:tls, :process})
      Mesh.assert_no_epmd(peer)
    end

    assert Peer.call(rogue, NodeAgent, :node_events, []) == []
  end

  test "figures: forming a 3-node mesh over TCP and over TLS in the same run", ctx do
    tcp_specs = specs(["t1", "t2", "t3"])

    tls_specs =
      specs(["s1", "s2", "s3"]) |> Enum.map(&%{&1 | ip: String.replace(&1.ip, ".0.", ".1.")})

    dns = start_dns!(tcp_specs ++ tls_specs)
    tcp = boot!(tcp_specs, dns, ctx.dir, nil)
    tls = boot!(tls_specs, dns, ctx.dir, ctx.good_ca)

    tcp_ms = timed_full_mesh(tcp)
    tls_ms = timed_full_mesh(tls)

    for peer <- tcp, {_node, kind} <- connection_kinds(peer), do: assert(kind == {:tcp, :port})
    for peer <- tls, {_node, kind} <- connection_kinds(peer), do: assert(kind == {:tls, :process})

    IO.puts("\n[tls] full mesh of 3 nodes by Node.connect: TCP #{tcp_ms} ms, TLS #{tls_ms} ms")
  end
end
