package org.mobilepirl.demo

import android.app.Activity
import android.os.Bundle
import android.widget.ScrollView
import android.widget.TextView
import org.tensorflow.lite.DataType
import org.tensorflow.lite.Interpreter
import java.io.FileInputStream
import java.nio.ByteBuffer
import java.nio.ByteOrder
import java.nio.MappedByteBuffer
import java.nio.channels.FileChannel
import kotlin.concurrent.thread
import kotlin.random.Random

/**
 * Loads assets/encoder.tflite (any Mobile-PIRL export: float32, float16, dynamic, int8 or
 * qat_int8), runs RUNS timed inferences on one synthetic image after WARMUP untimed ones, and
 * shows the median latency and the first values of the embedding.
 */
class MainActivity : Activity() {
    private companion object {
        const val MODEL = "encoder.tflite"
        const val WARMUP = 5
        const val RUNS = 50
        const val THREADS = 4
    }

    override fun onCreate(savedInstanceState: Bundle?) {
        super.onCreate(savedInstanceState)
        val text = TextView(this).apply { textSize = 16f; setPadding(32, 32, 32, 32) }
        setContentView(ScrollView(this).apply { addView(text) })
        text.text = "Timing $MODEL ..."
        thread {
            val report = try { benchmark() } catch (e: Exception) { "Failed: ${e.message}" }
            runOnUiThread { text.text = report }
        }
    }

    private fun loadModel(): MappedByteBuffer {
        val fd = assets.openFd(MODEL)
        FileInputStream(fd.fileDescriptor).channel.use { channel ->
            return channel.map(FileChannel.MapMode.READ_ONLY, fd.startOffset, fd.declaredLength)
        }
    }

    private fun benchmark(): String {
        val options = Interpreter.Options().setNumThreads(THREADS)
        Interpreter(loadModel(), options).use { interpreter ->
            val input = interpreter.getInputTensor(0)
            val output = interpreter.getOutputTensor(0)
            val shape = input.shape()                       // [1, S, S, 3]
            val pixels = ByteBuffer.allocateDirect(input.numBytes()).order(ByteOrder.nativeOrder())
            val random = Random(0)
            repeat(shape.reduce { a, b -> a * b }) {
                val value = random.nextInt(256)            // a pixel in [0, 255]
                when (input.dataType()) {
                    DataType.FLOAT32 -> pixels.putFloat(value.toFloat())
                    DataType.UINT8 -> pixels.put(value.toByte())
                    DataType.INT8 -> pixels.put((value - 128).toByte())
                    else -> error("unsupported input type ${input.dataType()}")
                }
            }
            val result = ByteBuffer.allocateDirect(output.numBytes()).order(ByteOrder.nativeOrder())
            repeat(WARMUP) { pixels.rewind(); result.rewind(); interpreter.run(pixels, result) }
            val times = DoubleArray(RUNS) {
                pixels.rewind(); result.rewind()
                val start = System.nanoTime()
                interpreter.run(pixels, result)
                (System.nanoTime() - start) / 1e6
            }
            times.sort()
            val median = (times[(RUNS - 1) / 2] + times[RUNS / 2]) / 2
            result.rewind()
            val scale = output.quantizationParams().scale
            val zero = output.quantizationParams().zeroPoint
            val embedding = List(minOf(8, output.shape().last())) {
                when (output.dataType()) {
                    DataType.FLOAT32 -> result.float
                    DataType.UINT8 -> ((result.get().toInt() and 0xFF) - zero) * scale
                    DataType.INT8 -> (result.get().toInt() - zero) * scale
                    else -> Float.NaN
                }
            }
            return buildString {
                appendLine("Model: $MODEL, input ${shape.joinToString("x")} ${input.dataType()}")
                appendLine("Threads: $THREADS, runs: $RUNS after $WARMUP warm-up")
                appendLine("Median latency: ${"%.2f".format(median)} ms")
                appendLine("Min / max: ${"%.2f".format(times.first())} / ${"%.2f".format(times.last())} ms")
                appendLine("Embedding (${output.shape().last()} values), first ${embedding.size}:")
                appendLine(embedding.joinToString(", ") { "%.4f".format(it) })
            }
        }
    }
}
