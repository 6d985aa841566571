"""Image input, datasets (WildlifeDatasets format, folder per identity) and the synthetic benchmark."""
