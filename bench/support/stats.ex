defmodule DynamicSrv.Bench.Stats do
  @moduledoc false

  @doc "Nearest-rank percentiles of nanosecond samples."
  def summary([]), do: %{n: 0, p50: nil, p99: nil, max: nil, mean: nil}

  def summary(samples) do
    sorted = Enum.sort(samples)
    n = length(sorted)
    tuple = List.to_tuple(sorted)
    at = fn q -> elem(tuple, min(n - 1, max(0, ceil(q * n) - 1))) end
    %{n: n, p50: at.(0.5), p99: at.(0.99), max: elem(tuple, n - 1), mean: Enum.sum(sorted) / n}
  end

  def median([]), do: nil
  def median(values), do: summary(values).p50

  @doc "Times `fun` `n` times; nanosecond samples."
  def time_n(n, fun) do
    for _ <- 1..n do
      t0 = :erlang.monotonic_time(:nanosecond)
      fun.()
      :erlang.monotonic_time(:nanosecond) - t0
    end
  end

  @doc "A duration in ns, in the unit that reads best."
  def dur(nil), do: "—"
  def dur(ns) when ns < 10_000, do: "#{fmt(ns / 1_000, 2)} µs"
  def dur(ns) when ns < 1_000_000, do: "#{fmt(ns / 1_000, 0)} µs"
  def dur(ns) when ns < 10_000_000, do: "#{fmt(ns / 1_000_000, 2)} ms"
  def dur(ns) when ns < 1_000_000_000, do: "#{fmt(ns / 1_000_000, 0)} ms"
  def dur(ns), do: "#{fmt(ns / 1_000_000_000, 2)} s"

  def ratio(_a, nil), do: "—"
  def ratio(nil, _b), do: "—"
  def ratio(_a, b) when b == 0, do: "—"

  def ratio(a, b) do
    r = a / b

    cond do
      r >= 10 -> "#{fmt(r, 0)}×"
      r >= 0.095 -> "#{fmt(r, 2)}×"
      r >= 0.00095 -> "#{fmt(r, 3)}×"
      true -> "#{fmt(r, 5)}×"
    end
  end

  def fmt(x, 0), do: x |> round() |> Integer.to_string()
  def fmt(x, digits), do: :erlang.float_to_binary(x / 1, decimals: digits)

  def kb(nil), do: "—"
  def kb(kb) when abs(kb) >= 1024, do: "#{fmt(kb / 1024, 1)} MB"
  def kb(kb), do: "#{kb} kB"

  def rate(per_s), do: "#{fmt(per_s, 0) |> group()}/s"

  def group(digits) do
    {sign, digits} =
      if String.starts_with?(digits, "-"),
        do: {"-", String.trim_leading(digits, "-")},
        else: {"", digits}

    grouped =
      digits
      |> String.reverse()
      |> String.to_charlist()
      |> Enum.chunk_every(3)
      |> Enum.join(",")
      |> String.reverse()

    sign <> grouped
  end
end
