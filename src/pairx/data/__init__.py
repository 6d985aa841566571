"""Image input, datasets (WildlifeDatasets format, folder per identity), synthetic benchmark."""
