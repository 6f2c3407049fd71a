"""DCASE 2026 Task 4 (S5) constants shared by its data, metrics, models and chain.

Facts from the official baseline (``nttcslab/dcase2026_task4_baseline``, ``src/utils.py`` and its configs; summarised
in ``../shared/reference/s5_facts``): 32 kHz, 10 s, 4-channel mixtures, 3 output slots, 18 target classes in this
order, "silence" as the tagger's 19th class.
"""

from __future__ import annotations

SAMPLE_RATE = 32000
CLIP_SECONDS = 10.0
MIX_CHANNELS = 4
N_SLOTS = 3
LABELS = (
    "AlarmClock",
    "BicycleBell",
    "Blender",
    "Buzzer",
    "Clapping",
    "Cough",
    "CupboardOpenClose",
    "Dishes",
    "Doorbell",
    "FootSteps",
    "HairDryer",
    "MechanicalFans",
    "MusicalKeyboard",
    "Percussion",
    "Pour",
    "Speech",
    "Typing",
    "VacuumCleaner",
)
SILENCE = "silence"
TAGGER_CLASSES = (*LABELS, SILENCE)  # silence = index 18
LABEL_INDEX = {name: i for i, name in enumerate(TAGGER_CLASSES)}

# asdzoo's built-in FOA data and simulated room responses use AmbiX: ACN channel order (W, Y, Z, X) with SN3D
# normalisation, the convention of the DCASE SELD FOA sets (STARSS23). The baseline code itself never names one.
FOA_CHANNELS = ("W", "Y", "Z", "X")
