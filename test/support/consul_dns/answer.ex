defmodule DynamicSrv.Test.ConsulDns.Answer do
  @moduledoc false
  # What Consul's DNS server answers to one query, as bytes: a pure function of the query, the
  # transport, the catalog and the DNS config, so the server process only routes packets.
  #
  # Every rule below was read from hashicorp/consul (read only, nothing copied):
  #   v1 (through 1.18): agent/dns.go; the 1.19+ server keeps the same trimming code in
  #   agent/dns/router_response.go (trimDNSResponse, trimUDPResponse, trimTCPResponse,
  #   syncExtra, dnsBinaryTruncate, indexRRs).
  #
  # * Names (dispatch): the rightmost label among service/node/addr decides; for SRV a
  #   `_`-prefixed label implies "service". `_svc._tcp.service[.dc].consul` is RFC 2782 (`_tcp`
  #   means no tag); `[tag.]svc.service[.dc].consul` is the old form. Other names: NXDOMAIN.
  # * Service lookups (handleServiceQuery): no instance -> NXDOMAIN with the SOA in authority
  #   (addSOAToMessage); instances shuffled on every query (`out.Nodes.Shuffle()`); TTL = the
  #   service TTL (GetTTLForService, default 0) on every record.
  # * SRV (addServiceSRVRecordsToMessage, makeNodeServiceRecords): one per distinct
  #   (node, service address, port); priority 1, weight 1 (findWeight, passing); target
  #   `<hex-ip>.addr.<dc>.consul` for an IP service address (makeRecordFromIP,
  #   encodeIPAsFqdn), else `<node>.node.<dc>.consul` (makeRecordFromServiceNode); that name's
  #   A/AAAA in the additional section, then, with `enable_additional_node_meta_txt` (default
  #   true), one TXT per node meta key owned by `<node>.node.<dc>.consul` - NOT by the .addr.
  #   target - holding `key=value` (RFC 1464, encodeKVasRFC1464; keys `rfc1035-*` raw).
  # * A/AAAA on a service (addServiceNodeRecordsToMessage): the instances' addresses owned by
  #   the question name, deduplicated, nothing additional; none of that family -> NOERROR
  #   with the SOA (errNoData).
  # * `<node>.node.<dc>.consul` (handleNodeQuery): A/AAAA of the node address (node TTL,
  #   default 0) plus its meta TXT additional; TXT queries get the meta as answers.
  # * `<hex>.addr.<dc>.consul` (dispatch "addr"): the decoded address, node TTL.
  # * EDNS (setEDNS, called BEFORE trimming): an OPT echoing the client's size is appended to
  #   the additional section, so trimming (syncExtra) drops it along with the TXT records.
  # * UDP (trimUDPResponse): limit = the EDNS size if above 512, capped at 65535-68. At
  #   exactly 512, more than min(8, udp_answer_limit = 3) answers are first cut to that many,
  #   sized uncompressed. Then while >1 answer and size > limit-8: drop authority, binary
  #   search the answer count (dnsBinaryTruncate, fits when <= limit, stops within 10 bytes)
  #   if over by more than 100 bytes, else drop the last; each step rebuilds the additional
  #   section (syncExtra) from the FIRST additional record owned by each kept SRV target.
  #   Trimmed = fewer answers than built.
  # * TCP (trimTCPResponse): SRV answers cut to 1,024 (4,096 for other types) WITHOUT
  #   counting as trimmed and without resyncing the additional section; then the same loop
  #   against 65,523 bytes, which alone counts as trimmed.
  # * TC (trimDNSResponse): set only when trimmed and `enable_truncate` (default false).

  alias DynamicSrv.Test.ScriptedDns.Wire

  @domain "consul"
  @max_udp_answers 8
  @max_udp_size 65_535 - 68
  @max_tcp_size 65_523

  @typedoc "What one answer did, for the server's stats and log."
  @type info :: %{
          qtype: atom(),
          name: String.t(),
          rcode: atom(),
          sent: non_neg_integer(),
          built: non_neg_integer(),
          trimmed: boolean(),
          tc: boolean()
        }

  @doc """
  The reply to `query` (see `Wire.decode_query/1`) over `transport`. `catalog` is
  `%{services: %{name => %{id => instance}}, nodes: %{node => %{address:, txt: meta_texts}}}`, `config`
  the server's options (see `DynamicSrv.Test.ConsulDns`).
  """
  @spec reply(Wire.query(), :udp | :tcp, map(), map()) :: {binary(), info()}
  def reply(query, transport, catalog, config) do
    qtype = Wire.type_name(query.qtype)
    labels = Enum.map(query.labels, &String.downcase/1)
    route = route(labels, qtype, config)
    {status, answers, additional, ttl} = lookup(route, qtype, query, catalog, config)
    # NXDOMAIN and NODATA (errNoData) carry the SOA, whose TTL is its minttl (0).
    {rcode, authority, ttl} =
      case status do
        :noerror -> {:noerror, [], ttl}
        :nodata -> {:noerror, [soa()], 0}
        :nxdomain -> {:nxdomain, [soa()], 0}
      end

    opt = if query.edns, do: [{:opt, query.udp_size}], else: []
    msg = %{answers: answers, authority: authority, additional: additional ++ opt}

    {msg, trimmed} =
      if transport == :udp,
        do: trim_udp(query, msg, config.udp_answer_limit, ttl),
        else: trim_tcp(query, qtype, msg, ttl)

    tc = trimmed and config.enable_truncate
    opts = [rcode: rcode, authority: msg.authority, ttl: ttl, tc: tc]

    info = %{
      qtype: qtype,
      name: Enum.join(labels, "."),
      rcode: rcode,
      sent: length(msg.answers),
      built: length(answers),
      trimmed: trimmed,
      tc: tc
    }

    {Wire.response(query, msg.answers, msg.additional, opts), info}
  end

  # --- names -------------------------------------------------------------------------------

  defp route(labels, qtype, config) do
    case Enum.split(labels, -1) do
      {rest, [@domain]} -> route_kind(Enum.reverse(rest), [], qtype, config)
      _ -> :invalid
    end
  end

  # Walks from the right, as dispatch does; `suffix` is what follows the kind label (the dc).
  defp route_kind([], _suffix, _qtype, _config), do: :invalid

  defp route_kind([kind | parts], suffix, _qtype, config)
       when kind in ["service", "node", "addr"],
       do: with_dc(String.to_atom(kind), Enum.reverse(parts), suffix, config)

  defp route_kind(["_" <> _ = label | parts], suffix, :srv, config),
    do: with_dc(:service, Enum.reverse([label | parts]), suffix, config)

  defp route_kind([label | parts], suffix, qtype, config),
    do: route_kind(parts, [label | suffix], qtype, config)

  # Only this server's datacenter exists: another one is Consul's "no path to datacenter".
  defp with_dc(_kind, [], _suffix, _config), do: :invalid
  defp with_dc(kind, parts, [], config), do: {kind, parts, config.dc}
  defp with_dc(kind, parts, [dc], %{dc: dc}), do: {kind, parts, dc}
  defp with_dc(_kind, _parts, _suffix, _config), do: :invalid

  # --- lookups: {rcode, answers, additional, ttl} ------------------------------------------

  defp lookup({:service, parts, dc}, qtype, query, catalog, config) do
    {service, tag} = service_and_tag(parts)

    instances =
      catalog.services
      |> Map.get(service, %{})
      |> Map.values()
      |> Enum.filter(&(tag == nil or tag in &1.tags))
      |> Enum.shuffle()

    cond do
      instances == [] -> {:nxdomain, [], [], 0}
      qtype == :srv -> srv_records(instances, query, dc, catalog, config)
      qtype in [:a, :aaaa] -> address_records(instances, qtype, query, config)
      true -> {:nodata, [], [], 0}
    end
  end

  defp lookup({:node, parts, _dc}, qtype, query, catalog, config) do
    case Map.fetch(catalog.nodes, Enum.join(parts, ".")) do
      :error ->
        {:nxdomain, [], [], 0}

      {:ok, node} ->
        owner = query.labels
        txt = if config.node_meta_txt, do: meta_txt(owner, node.txt), else: []

        case qtype do
          :txt ->
            {:noerror, meta_txt(owner, node.txt), [], config.node_ttl}

          type when type in [:a, :aaaa] ->
            {:noerror, address(owner, node.address, type), txt, config.node_ttl}

          _ ->
            {:noerror, [], [], config.node_ttl}
        end
    end
  end

  # Consul puts a record of the other family in the additional section instead.
  defp lookup({:addr, [hex], _dc}, qtype, query, _catalog, config) do
    case decode_hex_ip(hex) do
      nil ->
        {:nxdomain, [], [], 0}

      ip ->
        [record] = address(query.labels, ip, :any)
        family = if tuple_size(ip) == 4, do: :a, else: :aaaa

        if qtype == family,
          do: {:noerror, [record], [], config.node_ttl},
          else: {:noerror, [], [record], config.node_ttl}
    end
  end

  defp lookup(_invalid, _qtype, _query, _catalog, _config), do: {:nxdomain, [], [], 0}

  defp service_and_tag(["_" <> service, "_tcp"]), do: {service, nil}
  defp service_and_tag(["_" <> service, "_" <> tag]), do: {service, tag}
  defp service_and_tag([service]), do: {service, nil}

  defp service_and_tag(parts) do
    {tag, [service]} = Enum.split(parts, -1)
    {service, Enum.join(tag, ".")}
  end

  defp srv_records(instances, query, dc, catalog, config) do
    {answers, additional, _seen} =
      Enum.reduce(instances, {[], [], MapSet.new()}, fn inst, {answers, additional, seen} ->
        key = {inst.node, inst.address, inst.port}

        if MapSet.member?(seen, key) do
          {answers, additional, seen}
        else
          # Names as label lists: splitting dotted names on every encode made answers slow.
          node_name = [inst.node, "node", dc, @domain]
          node = Map.fetch!(catalog.nodes, inst.node)

          {target, ip} =
            if inst.address,
              do: {[hex_ip(inst.address), "addr", dc, @domain], inst.address},
              else: {node_name, node.address}

          srv = {:srv, query.labels, 1, 1, inst.port, target}
          txt = if config.node_meta_txt, do: meta_txt(node_name, node.txt), else: []
          extra = address(target, ip, :any) ++ txt
          {[srv | answers], [Enum.reverse(extra) | additional], MapSet.put(seen, key)}
        end
      end)

    additional = additional |> Enum.reverse() |> Enum.flat_map(&Enum.reverse/1)
    {:noerror, Enum.reverse(answers), additional, config.service_ttl}
  end

  defp address_records(instances, qtype, query, config) do
    answers =
      instances
      |> Enum.flat_map(&address(query.labels, &1.address || &1.node_address, qtype))
      |> Enum.uniq()

    if answers == [],
      do: {:nodata, [], [], 0},
      else: {:noerror, answers, [], config.service_ttl}
  end

  defp address(owner, {_, _, _, _} = ip, type) when type in [:a, :any], do: [{:a, owner, ip}]

  defp address(owner, {_, _, _, _, _, _, _, _} = ip, type) when type in [:aaaa, :any],
    do: [{:aaaa, owner, ip}]

  defp address(_owner, _ip, _type), do: []

  defp meta_txt(owner, texts), do: for(text <- texts, do: {:txt, owner, [text]})

  @doc "A node's meta as the strings of its TXT records (computed once, at registration)."
  @spec meta_texts(%{String.t() => String.t()}) :: [binary()]
  def meta_texts(meta) do
    for {key, value} <- meta do
      if String.starts_with?(String.downcase(key), "rfc1035-"),
        do: value,
        else: rfc1464(key, value)
    end
  end

  # RFC 1464: backquote ` and = in the key, and its leading and trailing spaces; ` in the value.
  defp rfc1464(key, value) do
    key = key |> String.replace("`", "``") |> String.replace("=", "`=")
    [lead] = Regex.run(~r/^ */, key)
    [trail] = Regex.run(~r/ *$/, key)
    middle = key |> String.trim_leading(" ") |> String.trim_trailing(" ")

    key =
      String.duplicate("` ", byte_size(lead)) <>
        middle <> String.duplicate("` ", byte_size(trail))

    key <> "=" <> String.replace(value, "`", "``")
  end

  defp soa do
    # makeSOARecord: serial = now; refresh/retry/expire/minttl defaults 3600/600/86400/0.
    {:soa, @domain, "ns." <> @domain, "hostmaster." <> @domain, System.os_time(:second), 3600,
     600, 86_400, 0}
  end

  @doc "An address as Consul writes it in `.addr.` names: lowercase hex, 8 or 32 digits."
  @spec hex_ip(:inet.ip_address()) :: String.t()
  def hex_ip({_, _, _, _} = ip),
    do: ip |> Tuple.to_list() |> :binary.list_to_bin() |> Base.encode16(case: :lower)

  def hex_ip(ip),
    do: for(w <- Tuple.to_list(ip), into: <<>>, do: <<w::16>>) |> Base.encode16(case: :lower)

  defp decode_hex_ip(hex) do
    case {byte_size(hex), Base.decode16(hex, case: :mixed)} do
      {8, {:ok, <<a, b, c, d>>}} -> {a, b, c, d}
      {32, {:ok, bytes}} -> List.to_tuple(for <<w::16 <- bytes>>, do: w)
      _ -> nil
    end
  end

  # --- trimming ----------------------------------------------------------------------------

  defp trim_udp(query, msg, answer_limit, ttl) do
    built = length(msg.answers)
    max_size = min(query.udp_size, @max_udp_size)
    index = index(msg.additional)
    max_answers = min(@max_udp_answers, answer_limit)

    {msg, compress} =
      if max_size == 512 and built > max_answers,
        do: {sync(%{msg | answers: Enum.take(msg.answers, max_answers)}, index), false},
        else: {msg, true}

    msg = trim_loop(query, msg, index, max_size, max_size - 8, compress, ttl)
    {msg, length(msg.answers) < built}
  end

  defp trim_tcp(query, qtype, msg, ttl) do
    cap = if qtype == :srv, do: 1024, else: 4096
    msg = %{msg | answers: Enum.take(msg.answers, cap)}
    index = index(msg.additional)
    trimmed = length(msg.answers) > 1 and size(query, msg, true, ttl) > @max_tcp_size
    {trim_loop(query, msg, index, @max_tcp_size, @max_tcp_size, true, ttl), trimmed}
  end

  defp trim_loop(query, msg, index, max_size, limit, compress, ttl) do
    size = size(query, msg, compress, ttl)

    if length(msg.answers) > 1 and size > limit do
      msg = %{msg | authority: []}
      size = size(query, msg, compress, ttl)

      kept =
        if size - max_size > 100,
          do: binary_truncate(query, msg, index, max_size, compress, ttl),
          else: length(msg.answers) - 1

      msg = sync(%{msg | answers: Enum.take(msg.answers, kept)}, index)
      trim_loop(query, msg, index, max_size, limit, compress, ttl)
    else
      msg
    end
  end

  defp binary_truncate(query, msg, index, max_size, compress, ttl),
    do: binary_truncate(query, msg, index, max_size, compress, ttl, 0, length(msg.answers) + 1)

  defp binary_truncate(_query, _msg, _index, _max, _compress, _ttl, low, high)
       when high - low <= 1,
       do: low

  defp binary_truncate(query, msg, index, max_size, compress, ttl, low, high) do
    median = low + div(high - low, 2)

    size =
      size(query, sync(%{msg | answers: Enum.take(msg.answers, median)}, index), compress, ttl)

    cond do
      size <= max_size and max_size - size < 10 ->
        median

      size <= max_size ->
        binary_truncate(query, msg, index, max_size, compress, ttl, median, high)

      true ->
        binary_truncate(query, msg, index, max_size, compress, ttl, low, median)
    end
  end

  # indexRRs: the first additional record owned by each name; OPT's owner is the root. Consul
  # lowercases both sides; the names compared here are all built by srv_records/5.
  defp index(additional) do
    Enum.reduce(additional, %{}, fn record, index ->
      Map.put_new(index, owner_key(record), record)
    end)
  end

  # syncExtra: the additional section becomes one indexed record per distinct SRV target.
  defp sync(msg, index) do
    targets = for {:srv, _, _, _, _, target} <- msg.answers, uniq: true, do: target

    %{msg | additional: for(t <- targets, Map.has_key?(index, t), do: Map.fetch!(index, t))}
  end

  defp owner_key({:opt, _}), do: []
  defp owner_key(record), do: elem(record, 1)

  defp size(query, msg, compress, ttl) do
    opts = [authority: msg.authority, ttl: ttl, compress: compress]
    byte_size(Wire.response(query, msg.answers, msg.additional, opts))
  end
end
