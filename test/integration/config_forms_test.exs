defmodule DynamicSrv.Integration.ConfigFormsTest do
  # The two ways to make a VM use DynamicSrv.Epmd, on real nodes behind a real dnsmasq:
  #
  #   * the flag `-epmd_module Elixir.DynamicSrv.Epmd` (every OTP; deprecated on 27+ but
  #     still read);
  #   * the kernel parameter `-kernel epmd_module "'Elixir.DynamicSrv.Epmd'"` (read from OTP
  #     27; OTP 25 ignores it).
  #
  # Giving both stops the node on OTP 27+. The tests run on the OTP of the test VM (the
  # nodes use the same `erl`), so ./scripts/test-otp covers 27 and 29.
  use ExUnit.Case, async: false
  @moduletag :integration

  import DynamicSrv.Test.Fleet
  alias DynamicSrv.Diagnosis
  alias DynamicSrv.Test.{Mesh, Peer}

  @otp String.to_integer(System.otp_release())
  @kernel_parameter_skip "OTP #{@otp} ignores the kernel parameter epmd_module (OTP 27+ read it)"

  # Three nodes configured `form`'s way form a full mesh by Node.connect through SRV records,
  # each with DynamicSrv.Epmd as its epmd module, no epmd, and no VM misconfiguration found.
  defp mesh!(form) do
    specs = specs(["a", "b", "c"])
    dns = start_dns!(records(specs))
    peers = boot!(specs, dns, %{}, epmd_config: form)
    Mesh.connect_and_assert_full_mesh(peers)

    for peer <- peers do
      Mesh.assert_no_epmd(peer)
      facts = Peer.call(peer, Diagnosis, :vm_facts, [])
      assert Diagnosis.vm_problems(facts) == [], inspect(facts)
    end

    peers
  end

  defp boot_env do
    %{"ERL_DIST_PORT" => Integer.to_string(DynamicSrv.Test.Ports.free())}
  end

  test "the -epmd_module flag: a full mesh through SRV records, without epmd" do
    mesh!(:flag)
  end

  if @otp < 27, do: @tag(skip: @kernel_parameter_skip)

  test "the kernel parameter -kernel epmd_module \"'Elixir.DynamicSrv.Epmd'\": a full mesh, without epmd" do
    [peer | _] = mesh!(:kernel)
    assert {:ok, [[~c"false"]]} == Peer.call(peer, :init, :get_argument, [:start_epmd])
    assert :error == Peer.call(peer, :init, :get_argument, [:epmd_module])
  end

  if @otp < 27, do: @tag(skip: @kernel_parameter_skip)

  test "both forms at once stop the node (OTP 27+), even naming the same module" do
    {status, output} = Peer.boot_failure("both@dyn.test", boot_env(), epmd_config: :both)
    assert is_integer(status) and status != 0
    assert output =~ "invalid_configuration", output
    assert output =~ "either -epmd_module or kernel epmd_module should be specified, not both"
  end

  if @otp >= 27, do: @tag(skip: "OTP #{@otp} reads the kernel parameter epmd_module")

  test "the kernel parameter alone is ignored before OTP 27: stock epmd is used and fails" do
    {status, output} = Peer.boot_failure("kernel@dyn.test", boot_env(), epmd_config: :kernel)
    assert is_integer(status) and status != 0
    # The VM asked the epmd daemon (none runs: ERL_EPMD_PORT is a dead port), not DNS.
    assert output =~ "register/listen error: econnrefused", output
    refute output =~ "DynamicSrv.Epmd"
  end

  describe "vm_problems/1 (what DynamicSrv.diagnose() and mix dynamic_srv.doctor report)" do
    @ours "Elixir.DynamicSrv.Epmd"
    @good %{
      otp: 27,
      flag: nil,
      kernel_parameter: DynamicSrv.Epmd,
      start_epmd: "false",
      named_at_boot?: true
    }

    test "good configurations have no problem" do
      assert Diagnosis.vm_problems(@good) == []
      assert Diagnosis.vm_problems(%{@good | flag: @ours, kernel_parameter: nil}) == []
      assert Diagnosis.vm_problems(%{@good | otp: 25, flag: @ours, kernel_parameter: nil}) == []
      # Not named at boot (Node.start/2 later): no epmd daemon was started.
      assert Diagnosis.vm_problems(%{@good | start_epmd: nil, named_at_boot?: false}) == []
    end

    test "the kernel parameter alone before OTP 27, with or without the inner quotes" do
      for value <- [DynamicSrv.Epmd, ~c"Elixir.DynamicSrv.Epmd"] do
        assert [%{what: what, fix: fix}] =
                 Diagnosis.vm_problems(%{@good | otp: 25, kernel_parameter: value})

        assert what =~ "OTP 25 ignores it"
        assert fix =~ "-epmd_module Elixir.DynamicSrv.Epmd"
      end
    end

    test "both forms on OTP 27+" do
      assert [%{what: what}] = Diagnosis.vm_problems(%{@good | otp: 29, flag: @ours})
      assert what =~ "refuses to start distribution with both"
    end

    test "an epmd daemon started anyway" do
      for facts <- [%{@good | start_epmd: nil}, %{@good | flag: @ours, kernel_parameter: nil}],
          facts = %{facts | start_epmd: nil} do
        assert [%{what: what, fix: fix}] = Diagnosis.vm_problems(facts)
        assert what =~ "without -start_epmd false"
        assert fix =~ "-start_epmd false"
      end
    end
  end
end
