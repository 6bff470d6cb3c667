defmodule HFBridge.Arrow.Field do
  @moduledoc """
  One field (column or nested child) of an Arrow schema.

    * `:name` — the field name (a binary, possibly empty for list items).
    * `:type` — see `t:HFBridge.Arrow.Schema.type/0`. For a dictionary-encoded
      field this is the type of the dictionary *values*; the encoding itself
      is described by `:dictionary`.
    * `:nullable` — whether the field may hold nulls.
    * `:children` — child fields (lists: one item field; structs: one per
      member; maps: one `entries` struct with `key` and `value`).
    * `:metadata` — the field's custom metadata as a map of binaries.
    * `:dictionary` — `nil`, or `%{id: integer, index_type: :int8 | ... |
      :uint64, ordered: boolean}` for dictionary-encoded fields.
  """

  @type t :: %__MODULE__{
          name: String.t(),
          type: HFBridge.Arrow.Schema.type(),
          nullable: boolean(),
          children: [t()],
          metadata: %{optional(String.t()) => String.t()},
          dictionary: nil | %{id: integer(), index_type: atom(), ordered: boolean()}
        }

  defstruct name: "", type: :null, nullable: true, children: [], metadata: %{}, dictionary: nil
end
