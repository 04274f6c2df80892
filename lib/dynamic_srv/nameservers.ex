defmodule DynamicSrv.Nameservers do
  @moduledoc """
  Which DNS servers DynamicSrv asks, first match wins:

    1. the `:nameservers` option of `DynamicSrv.Cluster` / the strategy (that topology only);
    2. `DYNAMIC_SRV_NAMESERVERS`;
    3. OTP's own resolver configuration, when you set one: the `{nameserver, IP}` and
       `{nameserver, IP, Port}` entries (then `{alt_nameserver, ...}`) of the inetrc file
       given with `-kernel inetrc '"FILE"'` (or `ERL_INETRC=FILE`), as users of the original
       `libcluster_dynamic_srv` point OTP's resolver at a Consul agent;
    4. `/etc/resolv.conf`.

  The inetrc file is read as OTP reads it (kernel's `inetrc` parameter first, then
  `ERL_INETRC`), not from `:inet_db`: with `-name`, OTP puts the resolv.conf servers in
  front of the inetrc ones there, and a later resolv.conf reload replaces them altogether.
  `DynamicSrv.diagnose()` prints which of the four the servers came from.
  """

  alias DynamicSrv.Native

  @var "DYNAMIC_SRV_NAMESERVERS"
  # As many as DYNAMIC_SRV_NAMESERVERS takes.
  @max 16

  @typedoc "Where the servers come from, with the servers as `ip:port` text where known."
  @type source ::
          {:option, String.t()}
          | {:env, String.t()}
          | {:inetrc, file :: String.t(), String.t()}
          | :resolv_conf

  @doc """
  The environment variables DynamicSrv reads (default: this OS process's), with
  `DYNAMIC_SRV_NAMESERVERS` filled in from OTP's inetrc when it is unset and the inetrc
  names nameservers.
  """
  @spec environment(%{String.t() => String.t()}) :: %{String.t() => String.t()}
  def environment(env \\ Native.environment()) do
    case source(nil, env) do
      {:inetrc, _file, servers} -> Map.put(env, @var, servers)
      _ -> env
    end
  end

  @doc "Where a topology with `option` (its `:nameservers`, or nil) gets its servers."
  @spec source(String.t() | nil, %{String.t() => String.t()}) :: source()
  def source(option, env \\ Native.environment())
  def source(option, _env) when is_binary(option), do: {:option, option}

  def source(nil, env) do
    case Map.fetch(env, @var) do
      {:ok, value} ->
        {:env, value}

      :error ->
        case inetrc() do
          {:ok, file, servers} -> {:inetrc, file, servers}
          :none -> :resolv_conf
        end
    end
  end

  @doc false
  # For the diagnosis's "nameservers:" line, after the servers themselves.
  @spec suffix(source() | nil) :: String.t()
  def suffix({:env, _}), do: " (from #{@var})"

  def suffix({:inetrc, file, _}),
    do: " (from OTP's resolver configuration: inetrc #{file}; #{@var} is not set)"

  def suffix(:resolv_conf), do: "; neither #{@var} nor an inetrc nameserver is set"
  def suffix(_), do: ""

  @doc false
  # The diagnosis's DYNAMIC_SRV_NAMESERVERS row says where the servers come from when the
  # variable is unset and an inetrc names them.
  @spec note_setting([map()], source()) :: [map()]
  def note_setting(settings, {:inetrc, file, servers}) do
    Enum.map(settings, fn
      %{variable: @var, error: nil} = setting ->
        %{setting | value: "#{servers} (from OTP's resolver configuration: inetrc #{file})"}

      setting ->
        setting
    end)
  end

  def note_setting(settings, _source), do: settings

  @doc """
  The nameservers of OTP's inetrc file as `"ip:port,..."`: `{:ok, file, servers}`, or
  `:none` when there is no inetrc, it cannot be read, or it names no nameserver.
  """
  @spec inetrc() :: {:ok, String.t(), String.t()} | :none
  def inetrc do
    case inetrc_file() do
      nil -> :none
      file -> inetrc(file)
    end
  end

  @doc false
  @spec inetrc(String.t()) :: {:ok, String.t(), String.t()} | :none
  def inetrc(file) do
    with {:ok, terms} <- read_terms(file),
         [_ | _] = servers <- servers(terms) do
      {:ok, file, servers |> Enum.take(@max) |> Enum.join(",")}
    else
      _ -> :none
    end
  end

  # Kernel's inetrc parameter first, then ERL_INETRC, as inet_config reads them.
  defp inetrc_file do
    case :application.get_env(:kernel, :inetrc) do
      {:ok, file} when is_list(file) or is_binary(file) -> to_string(file)
      _ -> System.get_env("ERL_INETRC")
    end
  end

  # erl_prim_loader, as inet_config: it works at boot, before file_server runs.
  defp read_terms(file) do
    with {:ok, binary, _full_name} <- :erl_prim_loader.get_file(String.to_charlist(file)),
         {:ok, tokens, _end} <- :erl_scan.string(String.to_charlist(binary <> "\n")) do
      tokens
      |> Enum.chunk_while([], &chunk_dot/2, &{:cont, Enum.reverse(&1), []})
      |> Enum.reject(&(&1 == []))
      |> Enum.reduce_while({:ok, []}, fn form, {:ok, acc} ->
        case :erl_parse.parse_term(form) do
          {:ok, term} -> {:cont, {:ok, [term | acc]}}
          {:error, _} -> {:halt, :error}
        end
      end)
      |> case do
        {:ok, terms} -> {:ok, Enum.reverse(terms)}
        :error -> :error
      end
    else
      _ -> :error
    end
  end

  defp chunk_dot({:dot, _} = dot, acc), do: {:cont, Enum.reverse([dot | acc]), []}
  defp chunk_dot(token, acc), do: {:cont, [token | acc]}

  # The file's nameservers in order, then those of a resolv.conf-format file it names
  # (`{resolv_conf, F}`, `{file, resolv, F}`), then its alternative ones.
  defp servers(terms) do
    primary = for term <- terms, s = entry(term, :nameserver), s != nil, do: s
    resolv = for term <- terms, file = resolv_file(term), s <- resolv_servers(file), do: s
    alt = for term <- terms, s = entry(term, :alt_nameserver), s != nil, do: s
    Enum.uniq(primary ++ resolv ++ alt)
  end

  defp resolv_file({:resolv_conf, file}) when is_list(file) or is_binary(file), do: file
  defp resolv_file({:file, :resolv, file}) when is_list(file) or is_binary(file), do: file
  defp resolv_file(_term), do: nil

  # `nameserver IP` lines, as OTP's inet_parse reads a resolv.conf (port 53).
  defp resolv_servers(file) do
    case :erl_prim_loader.get_file(to_charlist(file)) do
      {:ok, binary, _full_name} ->
        for line <- String.split(binary, "\n"),
            ["nameserver", address | _] <- [String.split(line)],
            {:ok, ip} <- [:inet.parse_strict_address(to_charlist(address))],
            s = server(ip, 53),
            s != nil,
            do: s

      :error ->
        []
    end
  end

  defp entry({kind, ip}, kind), do: server(ip, 53)
  defp entry({kind, ip, port}, kind), do: server(ip, port)
  defp entry(_term, _kind), do: nil

  defp server(ip, port) when is_integer(port) and port in 1..65_535 do
    case ip do
      {_, _, _, _} -> if :inet.is_ipv4_address(ip), do: "#{:inet.ntoa(ip)}:#{port}"
      {_, _, _, _, _, _, _, _} -> if :inet.is_ipv6_address(ip), do: "[#{:inet.ntoa(ip)}]:#{port}"
      _ -> nil
    end
  end

  defp server(_ip, _port), do: nil
end
