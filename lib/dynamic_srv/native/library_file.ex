defmodule DynamicSrv.Native.LibraryFile do
  @moduledoc false
  # Checks that an ELF shared library is whole before `:erlang.load_nif/2` maps it. dlopen of a
  # truncated file (a copy or deploy cut short, a build overwriting it) maps segments past the
  # end of the file, and the first touch kills the whole VM with SIGBUS, no message printed.
  # Files that are not ELF (a macOS Mach-O) are left for load_nif to judge.

  @doc false
  @spec check(Path.t()) :: :ok | {:error, String.t()}
  def check(path) do
    # prim_file, not File: this runs inside net_sup at boot, before the file server starts.
    case :prim_file.read_file(path) do
      {:ok, <<0x7F, "ELF", class, data, _::binary>> = bytes} ->
        check_size(bytes, class, endianness(data))

      {:ok, _other_format} ->
        :ok

      # load_nif reports a missing or unreadable file in its own words.
      {:error, _} ->
        :ok
    end
  end

  defp endianness(2), do: :big
  defp endianness(_), do: :little

  defp check_size(bytes, class, endian) do
    case needed_size(bytes, class, endian) do
      {:ok, needed} when needed <= byte_size(bytes) ->
        :ok

      {:ok, needed} ->
        {:error,
         "truncated: the file is #{byte_size(bytes)} bytes, its ELF headers describe #{needed}"}

      :error ->
        {:error,
         "truncated: the file is #{byte_size(bytes)} bytes, too short for its ELF headers"}
    end
  end

  # Field offsets and widths of the ELF header and program headers, for 64-bit (class 2) and
  # 32-bit files: {phoff, shoff, phentsize, phnum, shentsize, shnum}, then {p_offset, p_filesz}.
  @header %{
    2 => [{32, 8}, {40, 8}, {54, 2}, {56, 2}, {58, 2}, {60, 2}],
    1 => [{28, 4}, {32, 4}, {42, 2}, {44, 2}, {46, 2}, {48, 2}]
  }
  @segment %{2 => [{8, 8}, {32, 8}], 1 => [{4, 4}, {16, 4}]}

  # The end of the furthest program segment or header table: every byte dlopen reads or maps.
  defp needed_size(bytes, class, endian) when class in [1, 2] do
    [phoff, shoff, phentsize, phnum, shentsize, shnum] = fields(bytes, 0, @header[class], endian)

    segments =
      for i <- 0..(phnum - 1)//1 do
        [offset, filesz] = fields(bytes, phoff + i * phentsize, @segment[class], endian)
        offset + filesz
      end

    {:ok, Enum.max([phoff + phnum * phentsize, shoff + shnum * shentsize | segments])}
  rescue
    ArgumentError -> :error
  end

  defp needed_size(_bytes, _class, _endian), do: :error

  defp fields(bytes, base, layout, endian) do
    for {at, size} <- layout,
        do: :binary.decode_unsigned(binary_part(bytes, base + at, size), endian)
  end
end
