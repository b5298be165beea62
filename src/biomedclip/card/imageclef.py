"""ImageCLEF 2015's medical modality taxonomy: the classes the dataset card labels figures with."""

# ImageCLEF 2015 medical modality classes: the official codes, each with a name that reads as a
# zero-shot prompt ("this is an image of {}").
IMAGECLEF_2015: dict[str, str] = {
    # Diagnostic images: radiology.
    "DRUS": "ultrasound",
    "DRMR": "magnetic resonance imaging",
    "DRCT": "computed tomography",
    "DRXR": "x-ray radiography",
    "DRAN": "angiography",
    "DRPE": "positron emission tomography",
    "DRCO": "combined radiology modalities",
    # Diagnostic images: visible light photography.
    "DVDM": "dermatology skin photograph",
    "DVEN": "endoscopy",
    "DVOR": "photograph of other organs",
    # Diagnostic images: printed signals and waves.
    "DSEE": "electroencephalography",
    "DSEC": "electrocardiography",
    "DSEM": "electromyography",
    # Diagnostic images: microscopy.
    "DMLI": "light microscopy",
    "DMEL": "electron microscopy",
    "DMTR": "transmission microscopy",
    "DMFL": "fluorescence microscopy",
    # Diagnostic images: 3D reconstructions.
    "D3DR": "3D reconstruction",
    # Generic biomedical illustrations.
    "GTAB": "table",
    "GPLI": "program listing",
    "GFIG": "statistical chart or graph",
    "GSCR": "screenshot",
    "GFLO": "flowchart",
    "GSYS": "system overview diagram",
    "GGEN": "gene sequence",
    "GGEL": "chromatography or gel",
    "GCHE": "chemical structure",
    "GMAT": "mathematical formula",
    "GNCP": "non-clinical photograph",
    "GHDR": "hand-drawn sketch",
}
