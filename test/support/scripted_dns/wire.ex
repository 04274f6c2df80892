defmodule DynamicSrv.Test.ScriptedDns.Wire do
  @moduledoc false
  # The slice of the DNS wire format (RFC 1035) the scripted test server needs: decoding a
  # query, and encoding answers whose names are raw label lists, so a test can put on the wire
  # what no well-behaved server would: labels over 63 bytes, names over 255 bytes, dots,
  # spaces, `*` or non-ASCII bytes inside a label, any letter case.
  #
  # A name is a list of binaries (labels), or a dotted string split on ".". A label longer than
  # 63 bytes is written with its real length in the length byte, which RFC 1035 reserves for
  # pointers and extended label types: that is the point.
  #
  # The Consul-behaving server (`DynamicSrv.Test.ConsulDns`) also needs TXT, SOA and OPT
  # records, an authority section, a TTL and uncompressed encoding (to measure sizes as Consul
  # does): `response/4` takes them as options; `response/3` is unchanged.

  @type name :: String.t() | [binary()]
  @type wire_record ::
          {:srv, name(), priority :: 0..65535, weight :: 0..65535, port :: 0..65535,
           target :: name()}
          | {:a, name(), :inet.ip4_address()}
          | {:aaaa, name(), :inet.ip6_address()}
          | {:txt, name(), [binary()]}
          | {:cname, name(), name()}
          | {:soa, name(), mname :: name(), rname :: name(), serial :: non_neg_integer(),
             refresh :: non_neg_integer(), retry :: non_neg_integer(),
             expire :: non_neg_integer(), minimum :: non_neg_integer()}
          | {:opt, udp_size :: 0..65535}

  @type query :: %{
          id: 0..65535,
          rd: boolean(),
          labels: [binary()],
          qtype: 0..65535,
          qclass: 0..65535,
          question: binary(),
          udp_size: pos_integer(),
          edns: boolean()
        }

  @types %{1 => :a, 5 => :cname, 16 => :txt, 6 => :soa, 28 => :aaaa, 33 => :srv}
  @rcodes %{noerror: 0, servfail: 2, nxdomain: 3, refused: 5}

  @doc "The record type atom of a query type number (`:other` for any type not served here)."
  @spec type_name(0..65535) :: :a | :aaaa | :srv | :txt | :soa | :other
  def type_name(qtype), do: Map.get(@types, qtype, :other)

  @doc "Decodes a query message; `:error` for anything that is not one."
  @spec decode_query(binary()) :: {:ok, query()} | :error
  def decode_query(
        <<id::16, qr::1, _opcode::4, _aa::1, _tc::1, rd::1, _ra_z_rcode::8, 1::16, _an::16,
          _ns::16, ar::16, rest::binary>>
      )
      when qr == 0 do
    with {:ok, labels, after_name} <- decode_labels(rest, []),
         <<qtype::16, qclass::16, additional::binary>> <- after_name do
      question_size = byte_size(rest) - byte_size(additional)
      edns_size = udp_size(additional, ar)

      {:ok,
       %{
         id: id,
         rd: rd == 1,
         labels: labels,
         qtype: qtype,
         qclass: qclass,
         question: binary_part(rest, 0, question_size),
         udp_size: edns_size || 512,
         edns: edns_size != nil
       }}
    else
      _ -> :error
    end
  end

  def decode_query(_other), do: :error

  defp decode_labels(<<0, rest::binary>>, acc), do: {:ok, Enum.reverse(acc), rest}

  defp decode_labels(<<len, label::binary-size(len), rest::binary>>, acc) when len < 64,
    do: decode_labels(rest, [label | acc])

  defp decode_labels(_other, _acc), do: :error

  # The requestor's UDP payload size from its EDNS OPT record (RFC 6891, at least 512), else
  # nil: no EDNS.
  defp udp_size(<<0, 41::16, size::16, _::binary>>, ar) when ar > 0, do: max(size, 512)
  defp udp_size(_additional, _ar), do: nil

  @doc "An answer with only a header and the question: for rcodes and truncation."
  @spec empty_response(query(), atom(), keyword()) :: binary()
  def empty_response(query, rcode, opts \\ []) do
    header(query, rcode, Keyword.get(opts, :tc, false), {0, 0, 0}) <> query.question
  end

  @doc """
  A NOERROR answer to `query` with `answers` in the answer section and `additional` in the
  additional section, names compressed where a whole suffix was written before.

  Options: `rcode:` (default `:noerror`), `authority:` (records, default `[]`), `tc:`
  (default false), `ttl:` (of every record but OPT, default 0), `compress:` (default true).
  """
  @spec response(query(), [wire_record()], [wire_record()], keyword()) :: binary()
  def response(query, answers, additional, opts \\ []) do
    authority = Keyword.get(opts, :authority, [])
    ttl = Keyword.get(opts, :ttl, 0)
    start = header_size() + byte_size(query.question)

    # The question's name and its suffixes, as compression targets; :none turns compression off.
    offsets =
      if Keyword.get(opts, :compress, true),
        do: suffix_offsets(query.labels, header_size(), %{}),
        else: :none

    records = answers ++ authority ++ additional
    {body, _offsets, _end} = Enum.reduce(records, {[], offsets, start}, &append(&1, &2, ttl))

    rcode = Keyword.get(opts, :rcode, :noerror)
    tc = Keyword.get(opts, :tc, false)
    counts = {length(answers), length(authority), length(additional)}

    IO.iodata_to_binary([header(query, rcode, tc, counts), query.question, body])
  end

  defp append(record, {acc, offsets, offset}, ttl) do
    {bytes, offsets} = encode_record(record, offset, offsets, ttl)
    {[acc, bytes], offsets, offset + IO.iodata_length(bytes)}
  end

  @doc "Sets TC=1 and drops every record: what a server sends when the answer is too big."
  @spec truncated(query()) :: binary()
  def truncated(query), do: empty_response(query, :noerror, tc: true)

  @doc "The labels of a name given as a list of labels or a dotted string."
  @spec labels(name()) :: [binary()]
  def labels(name) when is_list(name), do: name
  def labels(name) when is_binary(name), do: name |> String.trim_trailing(".") |> split()

  defp split(""), do: []
  defp split(name), do: String.split(name, ".")

  defp header_size, do: 12

  defp header(query, rcode, tc, {an, ns, ar}) do
    rd = if query.rd, do: 1, else: 0
    tc = if tc, do: 1, else: 0
    # QR=1, opcode 0, AA=1, TC, RD copied, RA=1, Z=0.
    <<query.id::16, 1::1, 0::4, 1::1, tc::1, rd::1, 1::1, 0::3, Map.fetch!(@rcodes, rcode)::4,
      1::16, an::16, ns::16, ar::16>>
  end

  defp encode_record({:srv, name, priority, weight, port, target}, offset, offsets, ttl) do
    {owner, offsets} = encode_name(labels(name), offset, offsets)
    rdata_offset = offset + byte_size(owner) + 10
    # RFC 2782 forbids compressing the target; hickory reads it either way, but stay strict.
    target = labels(target)
    rdata = <<priority::16, weight::16, port::16, encode_uncompressed(target)::binary>>
    offsets = suffix_offsets(target, rdata_offset + 6, offsets)
    {[owner, <<33::16, 1::16, ttl::32, byte_size(rdata)::16>>, rdata], offsets}
  end

  defp encode_record({:a, name, {a, b, c, d}}, offset, offsets, ttl) do
    {owner, offsets} = encode_name(labels(name), offset, offsets)
    {[owner, <<1::16, 1::16, ttl::32, 4::16, a, b, c, d>>], offsets}
  end

  defp encode_record({:aaaa, name, ip}, offset, offsets, ttl) do
    {owner, offsets} = encode_name(labels(name), offset, offsets)
    words = for w <- Tuple.to_list(ip), into: <<>>, do: <<w::16>>
    {[owner, <<28::16, 1::16, ttl::32, 16::16>>, words], offsets}
  end

  # A CNAME's target written uncompressed (review tests: CNAME chains and loops).
  defp encode_record({:cname, name, target}, offset, offsets, ttl) do
    {owner, offsets} = encode_name(labels(name), offset, offsets)
    rdata = encode_uncompressed(labels(target))
    {[owner, <<5::16, 1::16, ttl::32, byte_size(rdata)::16>>, rdata], offsets}
  end

  defp encode_record({:txt, name, strings}, offset, offsets, ttl) do
    {owner, offsets} = encode_name(labels(name), offset, offsets)
    rdata = for s <- strings, into: <<>>, do: <<byte_size(s), s::binary>>
    {[owner, <<16::16, 1::16, ttl::32, byte_size(rdata)::16>>, rdata], offsets}
  end

  # SOA's two names may be compressed (RFC 1035 section 4.1.4; miekg/dns does).
  defp encode_record(
         {:soa, name, mname, rname, serial, refresh, retry, expire, min},
         offset,
         offsets,
         ttl
       ) do
    {owner, offsets} = encode_name(labels(name), offset, offsets)
    rdata_offset = offset + byte_size(owner) + 10
    {mname, offsets} = encode_name(labels(mname), rdata_offset, offsets)
    {rname, offsets} = encode_name(labels(rname), rdata_offset + byte_size(mname), offsets)
    numbers = <<serial::32, refresh::32, retry::32, expire::32, min::32>>
    rdata = IO.iodata_to_binary([mname, rname, numbers])
    {[owner, <<6::16, 1::16, ttl::32, byte_size(rdata)::16>>, rdata], offsets}
  end

  # RFC 6891: root owner, CLASS = the sender's UDP payload size, TTL = extended rcode and flags.
  defp encode_record({:opt, udp_size}, _offset, offsets, _ttl),
    do: {<<0, 41::16, udp_size::16, 0::32, 0::16>>, offsets}

  defp encode_uncompressed(labels) do
    IO.iodata_to_binary([Enum.map(labels, &<<byte_size(&1), &1::binary>>), 0])
  end

  # Writes the labels up to the first suffix already in `offsets`, then a pointer to it;
  # records every new suffix's offset. Keys are exact bytes: case variants are not merged.
  defp encode_name(labels, offset, offsets) do
    encode_name(labels, offset, offsets, [])
  end

  defp encode_name(labels, _offset, :none, _acc), do: {encode_uncompressed(labels), :none}
  defp encode_name([], _offset, offsets, acc), do: {IO.iodata_to_binary([acc, 0]), offsets}

  defp encode_name(labels, offset, offsets, acc) do
    case Map.fetch(offsets, labels) do
      {:ok, pointer} ->
        {IO.iodata_to_binary([acc, <<0b11::2, pointer::14>>]), offsets}

      :error ->
        [label | rest] = labels
        offsets = if offset < 0x3FFF, do: Map.put(offsets, labels, offset), else: offsets
        bytes = <<byte_size(label)::8, label::binary>>
        encode_name(rest, offset + byte_size(bytes), offsets, [acc, bytes])
    end
  end

  # Only well-formed labels (< 64 bytes) may serve as compression targets.
  defp suffix_offsets(_labels, _offset, :none), do: :none
  defp suffix_offsets([], _offset, offsets), do: offsets

  defp suffix_offsets([label | rest] = labels, offset, offsets) do
    if byte_size(label) < 64 and offset < 0x3FFF and
         Enum.all?(labels, &(byte_size(&1) < 64)) do
      offsets = Map.put_new(offsets, labels, offset)
      suffix_offsets(rest, offset + 1 + byte_size(label), offsets)
    else
      offsets
    end
  end
end
