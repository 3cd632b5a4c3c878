"""Writes the rows of one Parquet file again, cut differently, for the dataset tests.

usage: split_parquet.py SRC OUT

OUT/one/all.parquet      every row in one file, one row group
OUT/parts/part-NNN.parquet  the same rows in files of uneven sizes with uneven row groups
                         (plus a _SUCCESS marker and a .crc file that a listing must ignore)
OUT/nostats/part-NNN.parquet  the same parts written without column statistics
OUT/bad-schema/          two parts where the second has one feature column as strings
OUT/bad-file/            a good part followed by a truncated one
"""
import os
import sys

import pyarrow as pa
import pyarrow.parquet as pq

src, out = sys.argv[1], sys.argv[2]
table = pq.read_table(src)
n = table.num_rows

os.makedirs(f"{out}/one", exist_ok=True)
pq.write_table(table, f"{out}/one/all.parquet", row_group_size=n)

os.makedirs(f"{out}/parts", exist_ok=True)
os.makedirs(f"{out}/nostats", exist_ok=True)
cuts = [0, 7, 500, 1333, 1334, 2900, n]
groups = [3, 97, 250, 1, 400, 1000]
for i, (lo, hi) in enumerate(zip(cuts, cuts[1:])):
    pq.write_table(table.slice(lo, hi - lo), f"{out}/parts/part-{i:03d}.parquet",
                   row_group_size=groups[i], compression="snappy" if i % 2 else "zstd")
    pq.write_table(table.slice(lo, hi - lo), f"{out}/nostats/part-{i:03d}.parquet",
                   row_group_size=groups[i], write_statistics=False)
open(f"{out}/parts/_SUCCESS", "w").close()
open(f"{out}/parts/.part-000.parquet.crc", "w").write("not parquet")

os.makedirs(f"{out}/bad-schema", exist_ok=True)
pq.write_table(table.slice(0, 100), f"{out}/bad-schema/part-000.parquet")
bad = table.slice(100, 100)
col = bad.schema.get_field_index("Age")
bad = bad.set_column(col, "Age", pa.array([str(v) for v in bad.column("Age").to_pylist()]))
pq.write_table(bad, f"{out}/bad-schema/part-001.parquet")

os.makedirs(f"{out}/bad-file", exist_ok=True)
pq.write_table(table.slice(0, 2000), f"{out}/bad-file/part-000.parquet")
pq.write_table(table.slice(2000, n - 2000), f"{out}/bad-file/part-001.parquet")
data = open(f"{out}/bad-file/part-001.parquet", "rb").read()
open(f"{out}/bad-file/part-001.parquet", "wb").write(data[: len(data) // 2])
