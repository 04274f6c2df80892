defmodule DynamicSrv.Integration.InetrcTest do
  # The original libcluster_dynamic_srv's setup, unchanged: OTP's resolver pointed at the DNS
  # server with an inetrc file (`-kernel inetrc '"FILE"'`) and no DYNAMIC_SRV_* variable. The
  # epmd module and DynamicSrv.Cluster both take the inetrc's nameserver (this machine's
  # /etc/resolv.conf knows nothing of svc.dyn.test), and three real nodes form a full mesh.
  use ExUnit.Case, async: false
  @moduletag :integration

  import DynamicSrv.Test.Fleet
  alias DynamicSrv.Test.{DnsServer, Mesh, Peer}

  @tag timeout: 120_000
  test "an inetrc nameserver is used when DYNAMIC_SRV_NAMESERVERS is unset: 3 nodes cluster" do
    specs = specs(["n1", "n2", "n3"])
    dns = start_dns!(records(specs))

    dir = Path.join(System.tmp_dir!(), "dsrv-inetrc-#{System.unique_integer([:positive])}")
    File.mkdir_p!(dir)
    on_exit(fn -> File.rm_rf!(dir) end)
    inetrc = Path.join(dir, "inetrc")

    File.write!(inetrc, """
    {nameserver, {127,0,0,1}, #{dns.port}}.
    {lookup, [dns]}.
    """)

    peers =
      start_peers!(specs, fn spec ->
        # Only ERL_DIST_PORT: Peer clears every DYNAMIC_SRV_* variable.
        Peer.start!(Atom.to_string(node_name(spec)), %{"ERL_DIST_PORT" => "#{spec.port}"},
          erl_args: ["-connect_all", "false", "-kernel", "inetrc", ~s("#{inetrc}")]
        )
      end)

    for peer <- peers do
      refute Enum.any?(Peer.call(peer, System, :get_env, []), fn {k, _} ->
               String.starts_with?(k, "DYNAMIC_SRV_")
             end)
    end

    start_clusters!(peers, [])
    assert_full_mesh(peers)
    for peer <- peers, do: Mesh.assert_no_epmd(peer)

    assert Enum.any?(DnsServer.queries(dns), &(&1 =~ "query[SRV] #{service()} "))

    # The diagnosis says where the servers came from.
    report = Peer.call(hd(peers), DynamicSrv.Diagnosis, :run, [[]])
    text = Enum.join(DynamicSrv.Diagnosis.format(report), "\n")

    assert text =~
             "nameservers: 127.0.0.1:#{dns.port} (from OTP's resolver configuration: " <>
               "inetrc #{inetrc}; DYNAMIC_SRV_NAMESERVERS is not set)",
           text

    assert text =~
             "DYNAMIC_SRV_NAMESERVERS = 127.0.0.1:#{dns.port} (from OTP's resolver " <>
               "configuration: inetrc #{inetrc})",
           text
  end

  test "DYNAMIC_SRV_NAMESERVERS wins over the inetrc" do
    specs = specs(["solo"])
    dns = start_dns!(records(specs))
    inetrc = Path.join(System.tmp_dir!(), "dsrv-inetrc-#{System.unique_integer([:positive])}")
    File.write!(inetrc, "{nameserver, {127,0,0,9}, 53}.\n")
    on_exit(fn -> File.rm(inetrc) end)

    [spec] = specs

    peer =
      Peer.start!(
        Atom.to_string(node_name(spec)),
        %{
          "ERL_DIST_PORT" => "#{spec.port}",
          "DYNAMIC_SRV_NAMESERVERS" => DnsServer.nameserver(dns)
        },
        erl_args: ["-kernel", "inetrc", ~s("#{inetrc}")]
      )

    on_exit(fn -> Peer.stop(peer) end)

    report = Peer.call(peer, DynamicSrv.Diagnosis, :run, [[]])
    text = Enum.join(DynamicSrv.Diagnosis.format(report), "\n")

    assert text =~ "nameservers: #{DnsServer.nameserver(dns)} (from DYNAMIC_SRV_NAMESERVERS)",
           text

    # Its own SRV record answered from the DNS server the variable names.
    assert report.self_check.endpoint == "127.0.0.1:#{spec.port}", inspect(report.self_check)
  end
end
