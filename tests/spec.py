"""The documented real-data layouts (README, "The datasets"), written out independently of the package under test."""

# GRAZPEDWRI-DX dataset.csv: 17 columns, in this order.
GRAZ_COLUMNS = [
    "filestem",
    "patient_id",
    "study_number",
    "timehash",
    "gender",
    "age",
    "laterality",
    "projection",
    "initial_exam",
    "ao_classification",
    "cast",
    "diagnosis_uncertain",
    "osteopenia",
    "fracture_visible",
    "metal",
    "pixel_spacing",
    "device_manufacturer",
]
GRAZ_FLAGS = ["initial_exam", "cast", "diagnosis_uncertain", "osteopenia", "fracture_visible", "metal"]
