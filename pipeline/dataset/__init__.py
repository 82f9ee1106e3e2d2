"""The dataset stage: join faces, audio and labels; split by speaker; write Parquet shards."""
