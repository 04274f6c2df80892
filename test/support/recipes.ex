defmodule DynamicSrv.Test.Recipes do
  @moduledoc false
  # Reads a deployment recipe of examples/ as written (the strategy config from its
  # runtime.exs, a Nomad job's env block, what the release start script makes of them) and
  # boots nodes from it, each listening on its own address: shared by the recipes test and
  # the Consul test, so both run exactly what the docs tell users to paste.

  import ExUnit.Assertions

  alias DynamicSrv.Test.{Fleet, Peer}

  @examples Path.expand("../../examples", __DIR__)
  @epmd_flags ["-start_epmd", "false", "-epmd_module", "Elixir.DynamicSrv.Epmd"]

  def recipe(file), do: File.read!(Path.join(@examples, file))

  def examples_path(file), do: Path.join(@examples, file)

  @doc "The strategy's config from the recipe's config/runtime.exs."
  def strategy_config(dir) do
    config = Config.Reader.read!(Path.join([@examples, dir, "runtime.exs"]))
    assert [app: topology] = config[:libcluster][:topologies]
    assert topology[:strategy] == Cluster.Strategy.DynamicSrv
    topology[:config]
  end

  @doc "`KEY = \"value\"` lines of a Nomad `env { }` block."
  def nomad_env(file) do
    [block] = Regex.run(~r/\benv \{(.*?)\n\s*\}/s, recipe(file), capture: :all_but_first)
    pairs(~r/^\s*([A-Z_]+)\s*=\s*"([^"]*)"/m, block)
  end

  def pairs(regex, text) do
    for [_, key, value] <- Regex.scan(regex, text), into: %{}, do: {key, value}
  end

  @doc "Nomad's ${VAR} and Kubernetes' $(VAR) interpolation of the recipe's values."
  def interpolate(env, values) do
    Map.new(env, fn {key, value} ->
      {key,
       Enum.reduce(values, value, fn {var, v}, acc ->
         acc |> String.replace("${#{var}}", v) |> String.replace("$(#{var})", v)
       end)}
    end)
  end

  @doc """
  What the release's start script does with the recipe's variables: RELEASE_DISTRIBUTION
  picks -name, RELEASE_NODE is the name, ELIXIR_ERL_OPTIONS become VM flags (Peer passes the
  epmd flags itself, so they must be there and are taken out). The rest is the node's
  environment. Returns `{name, flags, env}`.
  """
  def boot_spec(env) do
    assert env["RELEASE_DISTRIBUTION"] == "name"
    flags = env["ELIXIR_ERL_OPTIONS"] |> String.split() |> Enum.chunk_every(2)
    epmd = Enum.chunk_every(@epmd_flags, 2)

    assert Enum.filter(flags, &(&1 in epmd)) == epmd,
           "ELIXIR_ERL_OPTIONS must start no epmd and use DynamicSrv.Epmd: #{inspect(flags)}"

    node_env =
      Map.drop(env, ~w(ELIXIR_ERL_OPTIONS RELEASE_DISTRIBUTION RELEASE_NODE RELEASE_COOKIE))

    {env["RELEASE_NODE"], List.flatten(flags -- epmd), node_env}
  end

  @doc """
  The Nomad recipe's `{name, flags, env}` for an allocation at `ip` with dist port `port`:
  its env block interpolated as Nomad would, then read as the release's start script does.
  """
  def nomad_node(ip, port) do
    nomad_env("nomad/app.nomad.hcl")
    |> interpolate(%{"NOMAD_PORT_dist" => "#{port}", "NOMAD_IP_dist" => ip})
    |> boot_spec()
  end

  @doc "Boots one node per `{name, ip, env}` in parallel, each listening on `ip` only."
  def boot!(nodes, flags, opts \\ []) do
    Fleet.start_peers!(
      nodes,
      fn {name, ip, env} ->
        {:ok, address} = :inet.parse_address(String.to_charlist(ip))
        interface = "{" <> (address |> Tuple.to_list() |> Enum.join(",")) <> "}"

        Peer.start!(name, env,
          netns: opts[:netns],
          erl_args:
            flags ++ ["-connect_all", "false", "-kernel", "inet_dist_use_interface", interface]
        )
      end,
      Keyword.get(opts, :max_concurrency, 4)
    )
  end

  @doc "An IPv4 address as Consul spells it in `<hex>.addr.<dc>.consul` targets."
  def hex_ip(ip) do
    {:ok, address} = :inet.parse_address(String.to_charlist(ip))

    address
    |> Tuple.to_list()
    |> Enum.map_join(&(&1 |> Integer.to_string(16) |> String.pad_leading(2, "0")))
    |> String.downcase()
  end
end
