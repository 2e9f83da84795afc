#!/bin/sh
echo "${GREETING}, ${TARGET}! This container runs $(cat /app/build-info.txt)."
