// Twilio's segment calculator (npm sms-segments-calculator) as the oracle of
// tests/core/test_segments.py: reads a JSON list of [text, smartEncoding] pairs on stdin and
// prints what the calculator makes of each, with its Smart Encoding table.
//
//     node segments_oracle.js NODE_MODULES_DIR < requests.json
"use strict";

const fs = require("fs");
const path = require("path");

const calculator = path.join(process.argv[2], "sms-segments-calculator");
const { SegmentedMessage } = require(calculator);
const SmartEncodingMap = require(path.join(calculator, "dist/libs/SmartEncodingMap")).default;

const results = JSON.parse(fs.readFileSync(0, "utf8")).map(([text, smartEncoding]) => {
  const message = new SegmentedMessage(text, "auto", smartEncoding);
  const bitsPerUnit = message.encodingName === "GSM-7" ? 7 : 16;
  return {
    encoding: message.encodingName,
    // messageSize: the bits of the text alone, without the parts' User Data Headers.
    units: message.messageSize / bitsPerUnit,
    segments: message.segmentsCount,
    characters: message.numberOfUnicodeScalars,
    // The text as sent, after Smart Encoding's replacements when asked for.
    text: message.graphemes.join(""),
  };
});
process.stdout.write(JSON.stringify({ smartEncodingMap: SmartEncodingMap, results }));
