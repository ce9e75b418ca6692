#!/bin/sh
# Generates the demo prompts of examples/audio-connector.toml: the seed
# menu's prompts, spoken by espeak-ng and converted by sox to what the Audio
# Connector plays (WAV, 8 kHz, mono, 16-bit PCM).  On Debian:
#
#   apt-get install -y espeak-ng sox
#   sh examples/make_prompts.sh
#
# Each file is named as the seed menu's audio URL (premium_priority.mp3 ->
# premium_priority.wav); a prompt is kept short (about two seconds at most)
# so that the files stay small.
set -eu

out="$(dirname "$0")/prompts/en-US"
mkdir -p "$out"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT

prompt() {
    name=$1
    text=$2
    espeak-ng -v en-us -s 190 -w "$tmp/$name.wav" "$text"
    # 8 kHz mono PCM16, trimmed of leading and trailing silence, at most 2 s.
    sox -V1 "$tmp/$name.wav" -r 8000 -c 1 -b 16 -e signed-integer "$out/$name.wav" \
        silence 1 0.05 0.5% reverse silence 1 0.05 0.5% reverse trim 0 2.0
}

prompt premium_priority "Premium members, press 1."
prompt ticket_status "For your open tickets, press 2."
prompt general_operator "For an operator, press 0."
prompt general_welcome "For sales, press 1."
prompt general_support "For support, press 2."
prompt selection_confirmed "Thank you. Connecting you."
prompt invalid_selection "Sorry, that is not an option."
